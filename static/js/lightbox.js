/* The gallery's lightbox: look through this page's images at full size without leaving it.
 *
 * A card's link still points at the image's detail page (no script, a modified click or a new
 * tab go there); a plain click or Enter opens the image in a modal <dialog> instead. Inside:
 * ArrowLeft/ArrowRight or a horizontal swipe step through the page, `i` toggles the info panel,
 * Esc closes and gives focus back to the card, Tab stays inside. The open image is in the URL
 * (#image=<id>), so a reload or a shared link opens it again; its neighbours are preloaded.
 * The records come from the page's #gallery-data JSON and are rendered with textContent only.
 */
(function () {
  'use strict';

  var dialog = document.getElementById('lightbox');
  var data = document.getElementById('gallery-data');
  if (!dialog || !data || typeof dialog.showModal !== 'function') return;

  var images;
  try {
    images = JSON.parse(data.textContent || '[]');
  } catch (e) {
    return;
  }
  if (!Array.isArray(images) || !images.length) return;

  // What every current browser decodes; a variant in another format is never shown here.
  var DISPLAYABLE = ['image/jpeg', 'image/png', 'image/webp', 'image/gif', 'image/avif'];
  var HASH_PREFIX = '#image=';
  var SWIPE_MIN_PX = 50;

  var img = document.getElementById('lightbox-image');
  var title = document.getElementById('lightbox-title');
  var position = document.getElementById('lightbox-position');
  var prevButton = document.getElementById('lightbox-prev');
  var nextButton = document.getElementById('lightbox-next');
  var closeButton = document.getElementById('lightbox-close');
  var infoToggle = document.getElementById('lightbox-info-toggle');
  var info = document.getElementById('lightbox-info');
  var detailsLink = document.getElementById('lightbox-details');
  var stage = document.getElementById('lightbox-stage');

  var links = images.map(function (image) {
    var card = document.querySelector('[data-testid="gallery-card"][data-image-id="' +
      CSS.escape(String(image.id)) + '"]');
    return card ? card.querySelector('.card-open') : null;
  });
  var current = -1;
  var returnFocus = null;
  var preloaded = [];

  var formatBytes = window.display.formatBytes;
  var safeUrl = window.display.safeUrl;

  // The largest variant a browser can show (fewest bytes among equals); the thumbnail otherwise.
  function bestView(image) {
    var best = null;
    (image.variants || []).forEach(function (v) {
      if (DISPLAYABLE.indexOf(String(v.content_type).toLowerCase()) < 0 || !safeUrl(v.url)) return;
      var area = v.width * v.height;
      var bestArea = best ? best.width * best.height : -1;
      if (area > bestArea || (area === bestArea && v.bytes < best.bytes)) best = v;
    });
    return best || image.thumbnail;
  }

  function preload(index) {
    if (index < 0 || index >= images.length) return;
    var url = safeUrl(bestView(images[index]).url);
    if (!url || preloaded.indexOf(url) >= 0) return;
    preloaded.push(url);
    var loader = new Image();
    loader.decoding = 'async';
    loader.src = url;
  }

  function setHash(id) {
    var base = location.pathname + location.search;
    history.replaceState(history.state, '', id === null ? base : base + HASH_PREFIX + encodeURIComponent(id));
  }

  function idFromHash() {
    if (location.hash.indexOf(HASH_PREFIX) !== 0) return null;
    try {
      return decodeURIComponent(location.hash.slice(HASH_PREFIX.length));
    } catch (e) {
      return null;
    }
  }

  function fillInfo(image, view) {
    dialog.querySelector('[data-testid="info-name"]').textContent = image.name;
    dialog.querySelector('[data-testid="info-dimensions"]').textContent =
      image.width + ' × ' + image.height + ' px';
    dialog.querySelector('[data-testid="info-bytes"]').textContent =
      formatBytes(image.bytes) + ' (' + String(image.source_format).toUpperCase() + '); shown: ' +
      String(view.format || '').toUpperCase() + ', ' + formatBytes(view.bytes);
    var labels = dialog.querySelector('[data-testid="info-labels"]');
    labels.textContent = '';
    (image.labels || []).forEach(function (label) {
      var li = document.createElement('li');
      li.className = 'label-chip label-chip-sm';
      li.textContent = label.description;
      labels.appendChild(li);
    });
    if (!labels.children.length) {
      var none = document.createElement('li');
      none.className = 'text-body-secondary';
      none.textContent = 'none';
      labels.appendChild(none);
    }
    var detail = safeUrl(image.detail_url);
    if (detail) detailsLink.href = detail;
    else detailsLink.removeAttribute('href');
  }

  function show(index) {
    var image = images[index];
    var view = bestView(image);
    current = index;
    img.width = view.width;
    img.height = view.height;
    img.alt = image.alt || image.name;
    img.src = safeUrl(view.url) || '';
    title.textContent = image.name;
    position.textContent = (index + 1) + ' of ' + images.length;
    prevButton.disabled = index === 0;
    nextButton.disabled = index === images.length - 1;
    fillInfo(image, view);
    setHash(image.id);
    preload(index - 1);
    preload(index + 1);
  }

  function open(index, opener) {
    returnFocus = opener || links[index] || null;
    show(index);
    if (!dialog.open) dialog.showModal();
    closeButton.focus();
  }

  function close() {
    if (!dialog.open) return;
    dialog.close();
  }

  // However it closes (button, Esc, the URL), the URL forgets the image and the card gets focus.
  dialog.addEventListener('close', function () {
    current = -1;
    setHash(null);
    var target = returnFocus;
    returnFocus = null;
    if (target) target.focus();
  });

  function step(delta) {
    var next = current + delta;
    if (current < 0 || next < 0 || next >= images.length) return;
    show(next);
  }

  function toggleInfo(force) {
    var visible = typeof force === 'boolean' ? force : info.hidden;
    info.hidden = !visible;
    infoToggle.setAttribute('aria-expanded', String(visible));
    infoToggle.classList.toggle('active', visible);
  }

  function focusable() {
    return Array.prototype.filter.call(
      dialog.querySelectorAll('a[href], button, [tabindex]:not([tabindex="-1"])'),
      function (el) { return !el.disabled && el.getClientRects().length > 0; }
    );
  }

  dialog.addEventListener('keydown', function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    if (event.key === 'ArrowLeft') {
      event.preventDefault();
      step(-1);
    } else if (event.key === 'ArrowRight') {
      event.preventDefault();
      step(1);
    } else if (event.key === 'i' || event.key === 'I') {
      event.preventDefault();
      toggleInfo();
    } else if (event.key === 'Escape') {
      event.preventDefault();
      close();
    } else if (event.key === 'Tab') {
      // A modal dialog keeps Tab inside (the browser alone would move on to its own toolbar).
      var els = focusable();
      if (!els.length) return;
      var at = els.indexOf(document.activeElement);
      var to = event.shiftKey ? (at <= 0 ? els.length - 1 : at - 1) : (at + 1) % els.length;
      event.preventDefault();
      els[to].focus();
    }
  });
  // The browser's own Esc handling (the cancel event) closes the same way.
  dialog.addEventListener('cancel', function (event) {
    event.preventDefault();
    close();
  });

  prevButton.addEventListener('click', function () { step(-1); });
  nextButton.addEventListener('click', function () { step(1); });
  closeButton.addEventListener('click', close);
  infoToggle.addEventListener('click', function () { toggleInfo(); });

  var touchStart = null;
  stage.addEventListener('touchstart', function (event) {
    touchStart = event.touches.length === 1
      ? { x: event.touches[0].clientX, y: event.touches[0].clientY } : null;
  }, { passive: true });
  stage.addEventListener('touchend', function (event) {
    if (!touchStart || !event.changedTouches.length) return;
    var dx = event.changedTouches[0].clientX - touchStart.x;
    var dy = event.changedTouches[0].clientY - touchStart.y;
    touchStart = null;
    if (Math.abs(dx) >= SWIPE_MIN_PX && Math.abs(dx) > Math.abs(dy)) step(dx < 0 ? 1 : -1);
  });

  links.forEach(function (link, index) {
    if (!link) return;
    link.addEventListener('click', function (event) {
      // New tab, new window, download: the link does what the user asked of it.
      if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
      event.preventDefault();
      open(index, link);
    });
  });

  function openFromUrl() {
    var id = idFromHash();
    var index = -1;
    for (var i = 0; i < images.length; i += 1) {
      if (String(images[i].id) === id) index = i;
    }
    if (index >= 0) open(index, links[index]);
    else close();
  }

  window.addEventListener('hashchange', openFromUrl);
  if (idFromHash() !== null) openFromUrl();
}());
