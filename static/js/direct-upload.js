/* Direct uploads for the upload page: files above `data-direct-threshold` bytes skip the app's
 * request (Cloud Run caps a request body at 32 MiB) and go straight to storage.
 *
 * 1. POST `data-direct-url` {content_type, size, name} -> a ticket {url, headers, complete_url}
 * 2. PUT the file to ticket.url with exactly ticket.headers (a GCS signed URL, or this app's
 *    single-use endpoint on local storage), with an XMLHttpRequest for upload progress
 * 3. POST ticket.complete_url with the conversion options -> the image record
 *
 * upload.js asks `window.directUpload.wants(file)` and hands such files to `send`, with hooks to
 * drive its progress bar. Everything here is same-origin except the PUT to a signed URL.
 */
(function () {
  'use strict';

  var form = document.getElementById('upload-form');
  if (!form) return;

  var threshold = Number(form.dataset.directThreshold) || 0;
  var maxBytes = Number(form.dataset.directMaxBytes) || 0;
  var ticketUrl = form.dataset.directUrl;
  var formMaxBytes = Number(form.dataset.maxBytes) || 0;
  var enabled = threshold > 0 && maxBytes > 0 && !!ticketUrl;

  // Browsers often give no type for these; the server sniffs the bytes anyway.
  var TYPES_BY_EXTENSION = {
    jpg: 'image/jpeg', jpeg: 'image/jpeg', png: 'image/png', gif: 'image/gif',
    webp: 'image/webp', avif: 'image/avif', heic: 'image/heic', heif: 'image/heif',
    tif: 'image/tiff', tiff: 'image/tiff', bmp: 'image/bmp'
  };
  var PUT_MESSAGES = {
    400: 'Storage refused the upload.',
    403: 'The upload link expired or was refused. Try again.',
    409: 'This upload link was already used. Try again.',
    410: 'The upload link expired. Try again.',
    413: 'The file is larger than announced or than the upload limit.'
  };

  function contentType(file) {
    if (file.type) return file.type;
    var dot = file.name.lastIndexOf('.');
    var ext = dot < 0 ? '' : file.name.slice(dot + 1).toLowerCase();
    return TYPES_BY_EXTENSION[ext] || 'application/octet-stream';
  }

  function parse(text) {
    try {
      return JSON.parse(text);
    } catch (e) {
      return null;
    }
  }

  function messageOf(body, status, fallback) {
    if (body && typeof body.message === 'string') return body.message;
    return fallback + ' (HTTP ' + status + ')';
  }

  // A same-origin POST to one of the page's direct-upload doors (session + CSRF token).
  function post(url, body, csrf, onDone) {
    var xhr = new XMLHttpRequest();
    xhr.open('POST', url);
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.setRequestHeader('X-CSRF-Token', csrf);
    if (!(body instanceof FormData)) xhr.setRequestHeader('Content-Type', 'application/json');
    xhr.addEventListener('load', function () { onDone(xhr.status, parse(xhr.responseText)); });
    xhr.addEventListener('error', function () { onDone(0, null); });
    xhr.addEventListener('timeout', function () { onDone(0, null); });
    xhr.timeout = 5 * 60 * 1000;
    xhr.send(body instanceof FormData ? body : JSON.stringify(body));
  }

  function put(ticket, file, hooks, onDone) {
    var xhr = new XMLHttpRequest();
    xhr.open(ticket.method || 'PUT', ticket.url);
    Object.keys(ticket.headers || {}).forEach(function (name) {
      xhr.setRequestHeader(name, ticket.headers[name]);
    });
    xhr.upload.addEventListener('progress', function (event) {
      if (event.lengthComputable) {
        hooks.progress(Math.min(99, Math.round((event.loaded / event.total) * 100)));
      }
    });
    xhr.addEventListener('load', function () {
      if (xhr.status >= 200 && xhr.status < 300) {
        onDone(null);
      } else {
        var body = parse(xhr.responseText);
        onDone(messageOf(body, xhr.status, PUT_MESSAGES[xhr.status] || 'The upload failed'));
      }
    });
    xhr.addEventListener('error', function () {
      onDone('The connection to storage failed. Check your network and try again.');
    });
    xhr.addEventListener('timeout', function () { onDone('The upload took too long.'); });
    // Big files on slow links: a PUT may take many minutes.
    xhr.timeout = 60 * 60 * 1000;
    xhr.send(file);
  }

  function completion(options) {
    var data = new FormData();
    if (options.formats.length) data.append('format', options.formats.join(','));
    if (options.width) data.append('width', options.width);
    if (options.height) data.append('height', options.height);
    data.append('fit', options.fit);
    if (options.quality) data.append('quality', options.quality);
    if (options.focus) data.append('focus', options.focus);
    return data;
  }

  /* hooks: progress(percent), processing(), succeed(image), fail(message), done() */
  function send(file, options, hooks) {
    var finished = false;
    function end(image, message) {
      if (finished) return;
      finished = true;
      if (image) hooks.succeed(image); else hooks.fail(message);
      hooks.done();
    }

    var announce = { content_type: contentType(file), size: file.size, name: file.name };
    post(ticketUrl, announce, options.csrf, function (status, ticket) {
      if (status !== 201 || !ticket || !ticket.url) {
        end(null, status === 0
          ? 'The connection to the server failed. Check your network and try again.'
          : messageOf(ticket, status, 'The upload could not start'));
        return;
      }
      put(ticket, file, hooks, function (problem) {
        if (problem) {
          end(null, problem);
          return;
        }
        hooks.processing();
        // Only this ticket's creator holds its completion key: the server wants it back.
        var body = completion(options);
        body.append('completion_key', ticket.completion_key || '');
        post(ticket.complete_url, body, options.csrf, function (done, image) {
          if ((done === 200 || done === 201) && image) {
            end(image, null);
          } else {
            end(null, done === 0
              ? 'The connection to the server failed. Check your network and try again.'
              : messageOf(image, done, 'The conversion failed'));
          }
        });
      });
    });
  }

  window.directUpload = {
    /* The page's size limit: direct uploads may be larger than the form's. */
    maxBytes: function (formLimit) {
      return enabled ? Math.max(formLimit, maxBytes) : formLimit;
    },
    /* Above the threshold, or too big for the form at all, but within the direct limit. */
    wants: function (file) {
      return enabled && file.size <= maxBytes &&
        (file.size > threshold || file.size > formMaxBytes);
    },
    send: send
  };
}());
