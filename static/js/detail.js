/* The detail page's script: show each variant's full public URL and copy it (or the <picture>
 * HTML) on "Copy"; offer "Delete" when this browser kept the image's delete key at upload time
 * (delete-keys.js).
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
    if (status) {
      status.textContent = copied
        ? button.dataset.copiedMessage || 'Link copied to the clipboard.'
        : 'Select the text and copy it.';
    }
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

  // Delete: only the uploader's browser holds the key, so only there does the button appear.
  // The request is a same-origin POST with the page's CSRF token; 204 means gone.
  var deleteForm = document.getElementById('delete-form');
  var deleteKey = deleteForm && window.deleteKeys
    ? window.deleteKeys.get(deleteForm.dataset.imageId)
    : null;
  if (deleteForm && deleteKey) {
    var imageId = deleteForm.dataset.imageId;
    var openButton = document.getElementById('delete-button');
    var confirmBox = document.getElementById('delete-confirm');
    var cancelButton = document.getElementById('delete-cancel');
    var message = document.getElementById('delete-message');
    var submitButton = deleteForm.querySelector('button[type="submit"]');

    deleteForm.elements.delete_key.value = deleteKey;
    deleteForm.classList.remove('d-none');

    var showConfirm = function (shown) {
      confirmBox.classList.toggle('d-none', !shown);
      openButton.setAttribute('aria-expanded', String(shown));
      if (shown) submitButton.focus();
    };
    var showMessage = function (text) {
      message.textContent = text;
      message.classList.remove('d-none');
    };
    openButton.addEventListener('click', function () {
      showConfirm(confirmBox.classList.contains('d-none'));
    });
    cancelButton.addEventListener('click', function () { showConfirm(false); });

    deleteForm.addEventListener('submit', function (event) {
      event.preventDefault();
      submitButton.disabled = true;
      message.classList.add('d-none');
      fetch(deleteForm.action, {
        method: 'POST',
        body: new FormData(deleteForm),
        credentials: 'same-origin',
        headers: {
          'Accept': 'application/json',
          'X-CSRF-Token': deleteForm.elements.csrf_token.value
        }
      }).then(function (response) {
        if (response.status === 204 || response.status === 404) {
          // Gone now (or already): the key is of no further use.
          window.deleteKeys.forget(imageId);
          location.assign(deleteForm.dataset.galleryUrl || '/');
          return null;
        }
        return response.json().catch(function () { return null; }).then(function (body) {
          submitButton.disabled = false;
          showMessage(body && typeof body.message === 'string'
            ? body.message
            : 'The image could not be deleted (HTTP ' + response.status + ').');
        });
      }, function () {
        submitButton.disabled = false;
        showMessage('The connection to the server failed. Check your network and try again.');
      });
    });
  }
}());
