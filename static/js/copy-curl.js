/* "Copy as curl" on the upload page: the same upload, with the options chosen right now, as a
 * curl command against the JSON API (POST /api/images), shown and copied to the clipboard.
 *
 * The options come from upload.js (window.uploadPage.readOptions), so the command sends exactly
 * what the page would. When the server needs an upload token the command carries a placeholder
 * for it; the page never knows the token itself (the session keeps only its hash).
 */
(function () {
  'use strict';

  var area = document.getElementById('curl-area');
  if (!area || !window.uploadPage) return;

  var button = document.getElementById('curl-button');
  var output = document.getElementById('curl-command');
  var status = document.getElementById('curl-status');
  var FILE_PLACEHOLDER = 'your-image.jpg';
  var TOKEN_PLACEHOLDER = '<your upload token>';

  // POSIX shell quoting: inside single quotes nothing is special except the quote itself.
  function quote(text) {
    return "'" + String(text).replace(/'/g, "'\\''") + "'";
  }

  function command() {
    var options = window.uploadPage.readOptions();
    var parts = ['curl', '--fail-with-body'];
    if (area.dataset.tokenRequired === 'true') {
      parts.push('-H', quote('Authorization: Bearer ' + TOKEN_PLACEHOLDER));
    }
    parts.push('-F', quote('image=@' + FILE_PLACEHOLDER));
    if (options.formats.length) parts.push('-F', quote('format=' + options.formats.join(',')));
    if (options.width) parts.push('-F', quote('width=' + options.width));
    if (options.height) parts.push('-F', quote('height=' + options.height));
    parts.push('-F', quote('fit=' + options.fit));
    if (options.quality) parts.push('-F', quote('quality=' + options.quality));
    if (options.focus) parts.push('-F', quote('focus=' + options.focus));
    parts.push(quote(area.dataset.apiUrl));
    return parts.join(' ');
  }

  button.addEventListener('click', function () {
    output.value = command();
    output.classList.remove('d-none');
    var hint = 'Replace ' + FILE_PLACEHOLDER + ' with your file' +
      (area.dataset.tokenRequired === 'true' ? ' and ' + TOKEN_PLACEHOLDER + ' with the token.' : '.');
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(output.value).then(
        function () { status.textContent = 'Copied. ' + hint; },
        function () { status.textContent = 'Select the command to copy it. ' + hint; }
      );
    } else {
      status.textContent = 'Select the command to copy it. ' + hint;
    }
  });

  area.classList.remove('d-none');
}());
