/* What every page's script shows the same way: byte sizes, and which server URLs may become
 * links or image sources. Loaded before the page scripts (base.html); they use window.display.
 */
(function () {
  'use strict';

  window.display = {
    // Binary units, as the pages print sizes (Jinja's filesizeformat(true)) and limits are set.
    formatBytes: function (n) {
      if (n < 1024) return n === 1 ? '1 byte' : n + ' bytes';
      if (n < 1024 * 1024) return (n / 1024).toFixed(1) + ' KiB';
      return (n / (1024 * 1024)).toFixed(1) + ' MiB';
    },

    // Only http(s) URLs from the server become links or image sources.
    safeUrl: function (url) {
      try {
        var resolved = new URL(url, location.href);
        return resolved.protocol === 'http:' || resolved.protocol === 'https:' ? resolved.href : null;
      } catch (e) {
        return null;
      }
    }
  };
})();
