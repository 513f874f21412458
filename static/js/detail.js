/* The detail page's script: show each variant's full public URL and copy it on "Copy".
 *
 * The Clipboard API needs a secure context (https or localhost); elsewhere the old
 * select-and-execCommand route still works in every browser we care about.
 */
(function () {
  'use strict';

  var status = document.getElementById('copy-status');

  // Relative URLs (local storage) become absolute, so what is copied works anywhere.
  document.querySelectorAll('input[data-absolute-url]').forEach(function (input) {
    try {
      input.value = new URL(input.value, location.href).href;
    } catch (e) {
      /* leave what the server sent */
    }
    input.addEventListener('focus', function () { input.select(); });
  });

  function copyBySelection(input) {
    input.focus();
    input.select();
    try {
      return document.execCommand('copy');
    } catch (e) {
      return false;
    }
  }

  function copy(input) {
    var text = input.value;
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).then(
        function () { return true; },
        function () { return copyBySelection(input); }
      );
    }
    return Promise.resolve(copyBySelection(input));
  }

  function feedback(button, copied) {
    var original = button.dataset.label || button.textContent;
    button.dataset.label = original;
    button.textContent = copied ? 'Copied!' : 'Press Ctrl+C';
    button.classList.toggle('btn-success', copied);
    button.classList.toggle('btn-outline-primary', !copied);
    if (status) status.textContent = copied ? 'Link copied to the clipboard.' : 'Select the link and copy it.';
    clearTimeout(Number(button.dataset.timer));
    button.dataset.timer = String(setTimeout(function () {
      button.textContent = original;
      button.classList.remove('btn-success');
      button.classList.add('btn-outline-primary');
    }, 2000));
  }

  document.querySelectorAll('button[data-copy-target]').forEach(function (button) {
    button.addEventListener('click', function () {
      var input = document.getElementById(button.dataset.copyTarget);
      if (!input) return;
      copy(input).then(function (copied) { feedback(button, copied); });
    });
  });
}());
