/* The upload page's script: drag and drop, instant client-side checks, and one XMLHttpRequest per
 * file so every file gets its own progress bar (fetch() cannot report upload progress).
 *
 * The form works without this script (a plain multipart POST); with it, files are queued,
 * checked, sent at most `data-max-parallel` at a time, and each result shows its links and
 * labels in place. Everything the server sends is rendered with textContent, never as HTML.
 */
(function () {
  'use strict';

  var form = document.getElementById('upload-form');
  if (!form) return;

  var zone = document.getElementById('drop-zone');
  var input = document.getElementById('file-input');
  var list = document.getElementById('upload-list');
  var template = document.getElementById('upload-item-template');
  var donePanel = document.getElementById('upload-done');
  var summary = document.getElementById('upload-summary');
  var formMessage = document.getElementById('form-message');
  var submitButton = document.getElementById('upload-button');

  var maxBytes = Number(form.dataset.maxBytes) || Infinity;
  if (window.directUpload) maxBytes = window.directUpload.maxBytes(maxBytes);
  var maxParallel = Math.max(1, Number(form.dataset.maxParallel) || 3);
  var galleryUrl = form.dataset.galleryUrl || '/';
  // Browsers often report no MIME type for some images (HEIC, AVIF), so the extensions the file
  // picker accepts (from the server's format registry) vouch for them.
  var IMAGE_EXTENSIONS = (input.getAttribute('accept') || '').split(',')
    .map(function (entry) { return entry.trim().toLowerCase(); })
    .filter(function (entry) { return entry.charAt(0) === '.'; })
    .map(function (entry) { return entry.slice(1); });
  var ACCEPTED_INPUTS = form.dataset.acceptedInputs || 'image';
  var FALLBACK_MESSAGES = {
    400: 'The server could not read this upload.',
    403: 'The form expired. Reload the page and try again.',
    413: 'The file is larger than the upload limit.',
    415: 'This file type is not accepted.',
    422: 'The image is too large to process.',
    429: 'Too many uploads right now. Wait a moment and try again.',
    503: 'The server is busy. Try again in a moment.'
  };

  var items = [];
  var running = 0;
  var batchOptions = null;

  zone.classList.add('is-enhanced');

  var formatBytes = window.display.formatBytes;

  function extension(name) {
    var dot = name.lastIndexOf('.');
    return dot < 0 ? '' : name.slice(dot + 1).toLowerCase();
  }

  function problemWith(file) {
    var type = (file.type || '').toLowerCase();
    if (type.indexOf('image/') !== 0 && IMAGE_EXTENSIONS.indexOf(extension(file.name)) < 0) {
      return 'Not an image: choose a ' + ACCEPTED_INPUTS + ' file.';
    }
    if (file.size === 0) return 'The file is empty.';
    if (file.size > maxBytes) {
      return 'Too large: ' + formatBytes(file.size) + ', the limit is ' + formatBytes(maxBytes) + '.';
    }
    return null;
  }

  var safeUrl = window.display.safeUrl;

  function galleryLink(slug) {
    var url = new URL(galleryUrl, location.href);
    url.searchParams.set('label', slug);
    return url.pathname + url.search;
  }

  // A fresh copy of one of the page's <template> pieces (its first element).
  function piece(id) {
    return document.getElementById(id).content.firstElementChild.cloneNode(true);
  }

  function part(item, selector) {
    return item.el.querySelector(selector);
  }

  function setStatus(item, text, tone) {
    var status = part(item, '.upload-status');
    status.textContent = text;
    status.className = 'small mt-1 upload-status' + (tone ? ' text-' + tone : ' text-body-secondary');
  }

  function setProgress(item, percent, label) {
    var bar = part(item, '.progress-bar');
    var wrapper = part(item, '.upload-progress');
    wrapper.setAttribute('aria-valuenow', String(percent));
    bar.style.width = percent + '%';
    bar.textContent = label || '';
  }

  // States: queued -> waiting -> uploading -> processing -> done | error; invalid never leaves.
  function setState(item, state) {
    item.state = state;
    item.el.dataset.state = state;
    part(item, '.upload-progress').dataset.state = state;
    var bar = part(item, '.progress-bar');
    bar.classList.remove('bg-success', 'bg-danger', 'progress-bar-striped', 'progress-bar-animated');
    if (state === 'waiting') {
      setProgress(item, 0, '');
      setStatus(item, 'Waiting…');
    } else if (state === 'uploading') {
      setStatus(item, 'Uploading…');
    } else if (state === 'processing') {
      bar.classList.add('progress-bar-striped', 'progress-bar-animated');
      setProgress(item, 100, 'processing…');
      setStatus(item, 'Converting and labelling…');
    } else if (state === 'done') {
      bar.classList.add('bg-success');
      setProgress(item, 100, 'done');
    } else if (state === 'error') {
      bar.classList.add('bg-danger');
      setProgress(item, 100, 'failed');
    }
  }

  function addFiles(fileList) {
    formMessage.classList.add('d-none');
    for (var i = 0; i < fileList.length; i += 1) {
      addFile(fileList[i]);
    }
  }

  function addFile(file) {
    var el = template.content.firstElementChild.cloneNode(true);
    var item = { file: file, el: el, state: 'queued' };
    part(item, '.upload-name').textContent = file.name || '(unnamed file)';
    part(item, '.upload-size').textContent = formatBytes(file.size);
    part(item, '.upload-progress').setAttribute('aria-label', 'Upload of ' + file.name);
    part(item, '.upload-remove').addEventListener('click', function () {
      if (item.state === 'waiting' || item.state === 'uploading' || item.state === 'processing') return;
      items.splice(items.indexOf(item), 1);
      el.remove();
    });
    var problem = problemWith(file);
    if (problem) {
      setState(item, 'invalid');
      setStatus(item, problem, 'danger');
      part(item, '.upload-status').setAttribute('role', 'alert');
    } else {
      setState(item, 'queued');
      setStatus(item, 'Ready to upload');
      showLocalPreview(item);
      noteLocation(item);
    }
    items.push(item);
    list.appendChild(el);
  }

  function showLocalPreview(item) {
    var img = part(item, '.upload-thumb');
    var url = URL.createObjectURL(item.file);
    img.addEventListener('load', function () {
      img.classList.remove('d-none');
      URL.revokeObjectURL(url);
    }, { once: true });
    // HEIC and friends do not decode in most browsers: no preview, no fuss.
    img.addEventListener('error', function () { URL.revokeObjectURL(url); }, { once: true });
    img.src = url;
  }

  // A phone photo often knows where it was taken; say before upload that public copies drop it.
  function noteLocation(item) {
    if (!window.exifGps) return;
    window.exifGps.hasPosition(item.file).then(function (hasPosition) {
      if (!hasPosition) return;
      var notice = part(item, '.upload-location');
      notice.textContent = 'This photo records where it was taken: public copies will not contain its location.';
      notice.classList.remove('d-none');
    });
  }

  function readOptions() {
    var formats = Array.prototype.map.call(
      form.querySelectorAll('input[name="format"]:checked'),
      function (box) { return box.value; }
    );
    return {
      formats: formats,
      width: form.elements.width.value.trim(),
      height: form.elements.height.value.trim(),
      fit: form.elements.fit.value,
      quality: form.elements.quality.value.trim(),
      focus: form.elements.focus ? form.elements.focus.value.trim() : '',
      csrf: form.elements.csrf_token.value
    };
  }

  function active() {
    return items.filter(function (it) {
      return it.state === 'waiting' || it.state === 'uploading' || it.state === 'processing';
    }).length;
  }

  function pump() {
    while (running < maxParallel) {
      var next = items.filter(function (it) { return it.state === 'waiting'; })[0];
      if (!next) break;
      send(next, batchOptions);
    }
    if (active() === 0) finishBatch();
  }

  function send(item, options) {
    running += 1;
    setState(item, 'uploading');
    setProgress(item, 0, '');
    // Big files go straight to storage (direct-upload.js), past the app's request size cap.
    if (window.directUpload && window.directUpload.wants(item.file)) {
      window.directUpload.send(item.file, options, {
        progress: function (percent) {
          if (item.state === 'uploading') setProgress(item, percent, percent + '%');
        },
        processing: function () { if (item.state === 'uploading') setState(item, 'processing'); },
        succeed: function (image) { succeed(item, image); },
        fail: function (message) { fail(item, message); },
        done: function () { running -= 1; pump(); }
      });
      return;
    }

    var data = new FormData();
    data.append('image', item.file, item.file.name);
    if (options.formats.length) data.append('format', options.formats.join(','));
    if (options.width) data.append('width', options.width);
    if (options.height) data.append('height', options.height);
    data.append('fit', options.fit);
    if (options.quality) data.append('quality', options.quality);
    if (options.focus) data.append('focus', options.focus);
    data.append('csrf_token', options.csrf);

    var xhr = new XMLHttpRequest();
    xhr.open('POST', form.action);
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.upload.addEventListener('progress', function (event) {
      if (event.lengthComputable && item.state === 'uploading') {
        var percent = Math.min(99, Math.round((event.loaded / event.total) * 100));
        setProgress(item, percent, percent + '%');
      }
    });
    // Every byte is sent: the server is now converting and labelling.
    xhr.upload.addEventListener('load', function () {
      if (item.state === 'uploading') setState(item, 'processing');
    });
    xhr.addEventListener('load', function () {
      var body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch (e) {
        body = null;
      }
      if ((xhr.status === 200 || xhr.status === 201) && body) {
        succeed(item, body.images ? body.images[0] : body);
      } else {
        var message = body && typeof body.message === 'string' ? body.message : null;
        fail(item, message || FALLBACK_MESSAGES[xhr.status] ||
          'The upload failed (HTTP ' + xhr.status + ').');
      }
    });
    xhr.addEventListener('error', function () {
      fail(item, 'The connection to the server failed. Check your network and try again.');
    });
    xhr.addEventListener('timeout', function () {
      fail(item, 'The server took too long to answer.');
    });
    xhr.addEventListener('loadend', function () {
      running -= 1;
      pump();
    });
    xhr.timeout = 5 * 60 * 1000;
    xhr.send(data);
  }

  function fail(item, message) {
    if (item.state === 'done' || item.state === 'error') return;
    setState(item, 'error');
    setStatus(item, message, 'danger');
    part(item, '.upload-status').setAttribute('role', 'alert');
  }

  function succeed(item, image) {
    // Shown only in this response: keep it so this browser can delete the image later.
    if (image.delete_key && image.id && window.deleteKeys) {
      window.deleteKeys.remember(image.id, image.delete_key);
    }
    setState(item, 'done');
    setStatus(item, image.duplicate ? 'Done: this image was already in the gallery.' : 'Done',
      'success');

    var name = part(item, '.upload-name');
    var detail = safeUrl(image.detail_url);
    // A held-back image's page answers 404 without its delete key: this browser has it.
    if (detail && image.hidden && image.delete_key) {
      var withKey = new URL(detail, location.href);
      withKey.searchParams.set('key', image.delete_key);
      detail = withKey.href;
    }
    if (detail) {
      var link = document.createElement('a');
      link.href = detail;
      link.textContent = image.name || item.file.name;
      link.className = 'link-body-emphasis';
      name.textContent = '';
      name.appendChild(link);
    }

    var thumbUrl = image.thumbnail && safeUrl(image.thumbnail.url);
    if (thumbUrl) {
      var img = part(item, '.upload-thumb');
      img.alt = image.name || '';
      img.src = thumbUrl;
      img.classList.remove('d-none');
    }

    var labels = part(item, '.result-labels');
    labels.textContent = '';
    (image.labels || []).forEach(function (label) {
      var li = piece('result-label-template');
      var chip = li.querySelector('a');
      chip.href = galleryLink(label.slug);
      chip.querySelector('.chip-text').textContent = label.description;
      chip.querySelector('.label-chip-count').textContent = Math.round(label.score * 100) + '%';
      labels.appendChild(li);
    });
    if (!labels.children.length) {
      var none = piece('no-labels-template');
      none.textContent = image.label_status === 'error' ? 'labels unavailable' : 'no labels';
      labels.appendChild(none);
    }

    var variants = part(item, '.result-variants');
    variants.textContent = '';
    (image.variants || []).forEach(function (variant) {
      var url = safeUrl(variant.url);
      if (!url) return;
      var li = piece('result-variant-template');
      li.querySelector('.variant-format').textContent =
        String(variant.format || variant.name).toUpperCase();
      var link = li.querySelector('.variant-url');
      link.href = url;
      link.title = url;
      link.textContent = url;
      li.querySelector('.variant-size').textContent =
        variant.width + '×' + variant.height + ' · ' + formatBytes(variant.bytes);
      variants.appendChild(li);
    });
    var notes = (image.warnings || []).slice();
    // The words in the picture were not read (the reader was busy, ...): say so.
    if (image.text_note) notes.push(image.text_note);
    if (image.hidden) {
      notes.unshift('Held back for review: it joins the gallery once an admin approves it.');
    }
    notes.forEach(function (warning) {
      var li = piece('result-note-template');
      li.textContent = warning;
      variants.appendChild(li);
    });
    part(item, '.upload-result').classList.remove('d-none');
  }

  function finishBatch() {
    if (!batchOptions) return;
    batchOptions = null;
    submitButton.disabled = false;
    submitButton.textContent = 'Upload';
    var ok = items.filter(function (it) { return it.state === 'done'; }).length;
    var failed = items.filter(function (it) { return it.state === 'error'; }).length;
    var text = ok + (ok === 1 ? ' image' : ' images') + ' uploaded';
    if (failed) text += ', ' + failed + ' failed';
    summary.textContent = text + '.';
    donePanel.classList.remove('d-none');
  }

  function showFormMessage(text) {
    formMessage.textContent = text;
    formMessage.classList.remove('d-none');
  }

  form.addEventListener('submit', function (event) {
    event.preventDefault();
    if (batchOptions) return;
    formMessage.classList.add('d-none');
    var queued = items.filter(function (it) { return it.state === 'queued'; });
    if (!queued.length) {
      var invalid = items.some(function (it) { return it.state === 'invalid'; });
      showFormMessage(invalid
        ? 'None of the chosen files can be uploaded: see the note beside each one.'
        : 'Choose at least one image first.');
      return;
    }
    batchOptions = readOptions();
    donePanel.classList.add('d-none');
    submitButton.disabled = true;
    submitButton.textContent = 'Uploading…';
    queued.forEach(function (it) { setState(it, 'waiting'); });
    pump();
  });

  input.addEventListener('change', function () {
    addFiles(input.files);
    // The queue owns the files now; clearing lets the same file be chosen again.
    input.value = '';
  });

  function carriesFiles(event) {
    var types = event.dataTransfer && event.dataTransfer.types;
    return !!types && Array.prototype.indexOf.call(types, 'Files') >= 0;
  }

  ['dragenter', 'dragover'].forEach(function (type) {
    zone.addEventListener(type, function (event) {
      if (!carriesFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = 'copy';
      zone.classList.add('is-dragover');
    });
  });
  zone.addEventListener('dragleave', function (event) {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove('is-dragover');
  });
  zone.addEventListener('drop', function (event) {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    zone.classList.remove('is-dragover');
    addFiles(event.dataTransfer.files);
  });
  // Files dropped anywhere on the page join the queue too (and never navigate away from it).
  window.addEventListener('dragover', function (event) {
    if (!carriesFiles(event) || zone.contains(event.target)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
  });
  window.addEventListener('drop', function (event) {
    if (!carriesFiles(event) || zone.contains(event.target)) return;
    event.preventDefault();
    addFiles(event.dataTransfer.files);
  });

  // Ctrl/Cmd+V of an image (a screenshot, a copied file) queues it; pasted text is left alone.
  document.addEventListener('paste', function (event) {
    var files = event.clipboardData && event.clipboardData.files;
    if (!files || !files.length) return;
    event.preventDefault();
    addFiles(files);
  });

  // For "Copy as curl" (copy-curl.js): the options exactly as an upload from this page sends them.
  window.uploadPage = { readOptions: readOptions };

  // Files chosen before the script ran (slow network, back/forward cache) join the queue.
  if (input.files && input.files.length) {
    addFiles(input.files);
    input.value = '';
  }
}());
