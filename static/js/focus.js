/* The detail page's focal point: a click or tap on the whole picture (or the arrow keys on it)
 * sets the point the cover crops keep in view; "Re-crop" posts it with the page's CSRF token and
 * the delete key this browser kept at upload time (delete-keys.js), then reloads the page, whose
 * variants now have new links. Without this script the form posts x and y by itself.
 */
(function () {
  'use strict';

  var form = document.getElementById('focus-form');
  if (!form) return;
  var picker = document.getElementById('focus-picker');
  var picture = picker.querySelector('img');
  var marker = document.getElementById('focus-marker');
  var fieldX = document.getElementById('focus-x');
  var fieldY = document.getElementById('focus-y');
  var message = document.getElementById('focus-message');
  var submit = form.querySelector('button[type="submit"]');
  var keyField = document.getElementById('focus-key-field');
  var key = window.deleteKeys ? window.deleteKeys.get(form.dataset.imageId) : null;

  if (key && keyField) {
    form.elements.delete_key.value = key;
    keyField.classList.add('d-none');
  }

  function clamp(value) { return Math.min(100, Math.max(0, value)); }
  function tidy(value) { return String(Math.round(clamp(value) * 10) / 10); }

  function current() {
    var x = parseFloat(fieldX.value);
    var y = parseFloat(fieldY.value);
    return [isNaN(x) ? 50 : x, isNaN(y) ? 50 : y];
  }

  function show(x, y) {
    // CSSOM, not a style attribute: the page's CSP allows no inline styles.
    marker.style.left = clamp(x) + '%';
    marker.style.top = clamp(y) + '%';
    marker.classList.remove('d-none');
  }

  function set(x, y) {
    fieldX.value = tidy(x);
    fieldY.value = tidy(y);
    show(x, y);
    message.textContent = 'Focal point ' + fieldX.value + ' % across, ' + fieldY.value + ' % down.';
  }

  if (fieldX.value && fieldY.value) show(parseFloat(fieldX.value), parseFloat(fieldY.value));

  picture.addEventListener('click', function (event) {
    var box = picture.getBoundingClientRect();
    set((event.clientX - box.left) / box.width * 100, (event.clientY - box.top) / box.height * 100);
    picker.focus();
  });

  var STEPS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
  picker.addEventListener('keydown', function (event) {
    if (event.key === 'Enter') {
      event.preventDefault();
      if (form.requestSubmit) form.requestSubmit(); else form.submit();
      return;
    }
    var step = STEPS[event.key];
    if (!step) return;
    event.preventDefault();
    var size = event.shiftKey ? 1 : 5;
    var point = current();
    set(point[0] + step[0] * size, point[1] + step[1] * size);
  });

  [fieldX, fieldY].forEach(function (field) {
    field.addEventListener('input', function () {
      var point = current();
      show(point[0], point[1]);
    });
  });

  form.addEventListener('submit', function (event) {
    event.preventDefault();
    submit.disabled = true;
    message.textContent = 'Cropping again…';
    fetch(form.action, {
      method: 'POST',
      body: new FormData(form),
      credentials: 'same-origin',
      headers: { 'Accept': 'application/json', 'X-CSRF-Token': form.elements.csrf_token.value }
    }).then(function (response) {
      return response.json().catch(function () { return null; }).then(function (body) {
        if (response.ok) {
          message.textContent = 'Re-cropped. Loading the new versions…';
          location.hash = 'focus';
          location.reload();
          return;
        }
        submit.disabled = false;
        message.textContent = body && typeof body.message === 'string'
          ? body.message
          : 'The image could not be cropped again (HTTP ' + response.status + ').';
      });
    }, function () {
      submit.disabled = false;
      message.textContent = 'The connection to the server failed. Check your network and try again.';
    });
  });
}());
