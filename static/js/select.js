/* The gallery's selection: pick several images, then download them as one ZIP or delete them.
 *
 * Each card gets a checkbox (a real <input>, so Tab and Space reach and toggle it). Any image
 * may go in a ZIP (GET <zip-url>?ids=..., a plain download the browser streams to disk). Delete
 * sends the ids with the delete keys this browser holds (delete-keys.js) to the API door, which
 * reads no cookie; with an admin session it goes to the page door with the CSRF token instead,
 * and needs no keys. Each id answers for itself; the page then reloads to show what is left,
 * and the outcome is kept in sessionStorage for that one reload.
 */
(function () {
  'use strict';

  var bar = document.getElementById('selection-bar');
  if (!bar || !window.fetch) return;

  var STATUS_KEY = 'cloud-image-app:selection-status';
  var admin = bar.dataset.admin === 'true';
  var max = parseInt(bar.dataset.max, 10) || 100;
  var count = document.getElementById('selection-count');
  var status = document.getElementById('selection-status');
  var selectAll = document.getElementById('select-all');
  var selectMine = document.getElementById('select-mine');
  var selectNone = document.getElementById('select-none');
  var download = document.getElementById('download-selected');
  var remove = document.getElementById('delete-selected');
  var cards = Array.prototype.slice.call(document.querySelectorAll('[data-testid="gallery-card"]'));

  function plural(n, word) {
    return n + ' ' + word + (n === 1 ? '' : 's');
  }

  var boxes = cards.map(function (card) {
    var link = card.querySelector('.card-open');
    var box = document.createElement('input');
    box.type = 'checkbox';
    box.className = 'form-check-input card-select';
    box.dataset.testid = 'card-select';
    box.setAttribute('aria-label', 'Select ' + (link ? link.textContent.trim() : 'this image'));
    box.addEventListener('change', function () {
      card.classList.toggle('is-selected', box.checked);
      update();
    });
    card.insertBefore(box, card.firstChild);
    return box;
  });

  function idOf(i) { return cards[i].dataset.imageId; }
  function keyOf(i) { return window.deleteKeys.get(idOf(i)); }
  function deletable(i) { return admin || keyOf(i) !== null; }
  function selected() {
    return boxes.map(function (box, i) { return box.checked ? i : -1; })
      .filter(function (i) { return i >= 0; });
  }

  function say(text) { status.textContent = text; }

  function update() {
    var chosen = selected();
    var mine = chosen.filter(deletable);
    count.textContent = chosen.length ? plural(chosen.length, 'image') + ' selected' : 'None selected';
    bar.classList.toggle('has-selection', chosen.length > 0);
    document.body.classList.toggle('is-selecting', chosen.length > 0);
    selectNone.disabled = chosen.length === 0;
    download.disabled = chosen.length === 0 || chosen.length > max;
    remove.disabled = mine.length === 0;
    remove.textContent = mine.length ? 'Delete ' + mine.length : 'Delete';
    selectMine.hidden = admin || !cards.some(function (card, i) { return keyOf(i) !== null; });
  }

  function choose(test) {
    boxes.forEach(function (box, i) {
      box.checked = test(i);
      cards[i].classList.toggle('is-selected', box.checked);
    });
    update();
  }

  selectAll.addEventListener('click', function () { choose(function () { return true; }); });
  selectMine.addEventListener('click', function () { choose(function (i) { return keyOf(i) !== null; }); });
  selectNone.addEventListener('click', function () { choose(function () { return false; }); });

  download.addEventListener('click', function () {
    var ids = selected().map(idOf);
    if (!ids.length) return;
    if (ids.length > max) {
      say('A ZIP holds at most ' + max + ' images: select fewer.');
      return;
    }
    var link = document.createElement('a');
    link.href = bar.dataset.zipUrl + '?ids=' + ids.map(encodeURIComponent).join(',');
    link.download = '';
    document.body.appendChild(link);
    link.click();
    link.remove();
    say('Downloading ' + plural(ids.length, 'image') + ' as one ZIP.');
  });

  remove.addEventListener('click', function () {
    var chosen = selected();
    var mine = chosen.filter(deletable);
    if (!mine.length) return;
    var others = chosen.length - mine.length;
    var question = 'Delete ' + plural(mine.length, 'image') + '? This cannot be undone.';
    if (others) {
      question += '\n' + plural(others, 'selected image') + ' will stay: this browser holds no delete key for them.';
    }
    if (!window.confirm(question)) return;
    var keys = {};
    mine.forEach(function (i) {
      var key = keyOf(i);
      if (key) keys[idOf(i)] = key;
    });
    var headers = { 'Accept': 'application/json', 'Content-Type': 'application/json' };
    if (admin) headers['X-CSRF-Token'] = bar.dataset.csrf || '';
    remove.disabled = true;
    say('Deleting ' + plural(mine.length, 'image') + '…');
    fetch(bar.dataset.deleteUrl, {
      method: 'POST',
      credentials: admin ? 'same-origin' : 'omit',
      headers: headers,
      body: JSON.stringify({ ids: mine.map(idOf), keys: keys })
    }).then(function (response) {
      return response.json().catch(function () { return null; }).then(function (body) {
        if (!response.ok || !body || !Array.isArray(body.results)) {
          update();
          say(body && typeof body.message === 'string'
            ? body.message
            : 'The images could not be deleted (HTTP ' + response.status + ').');
          return;
        }
        var gone = 0;
        var failures = [];
        body.results.forEach(function (result) {
          if (result.status === 204 || result.status === 404) {
            // Deleted now, or already: the key is of no further use.
            window.deleteKeys.forget(String(result.id));
            if (result.status === 204) gone += 1;
          } else {
            failures.push(String(result.message || 'HTTP ' + result.status));
          }
        });
        var outcome = 'Deleted ' + plural(gone, 'image') + '.';
        if (failures.length) {
          outcome += ' ' + plural(failures.length, 'image') + ' could not be deleted: ' +
            failures.filter(function (m, i) { return failures.indexOf(m) === i; }).join(' ');
        }
        if (others) outcome += ' ' + plural(others, 'other') + ' stayed (not yours).';
        try {
          window.sessionStorage.setItem(STATUS_KEY, outcome);
        } catch (e) { /* the outcome is only not shown again after the reload */ }
        location.reload();
      });
    }, function () {
      update();
      say('The connection to the server failed. Check your network and try again.');
    });
  });

  try {
    var earlier = window.sessionStorage.getItem(STATUS_KEY);
    if (earlier) {
      window.sessionStorage.removeItem(STATUS_KEY);
      say(earlier);
    }
  } catch (e) { /* no sessionStorage: nothing to show */ }

  selectAll.disabled = false;
  bar.classList.add('is-ready');
  update();
}());
