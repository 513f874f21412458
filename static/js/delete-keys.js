/* The delete keys this browser was given at upload time, shared by the upload and detail pages.
 *
 * The server shows an image's delete key once, in the upload response, and keeps only its hash,
 * so this browser's copy is the only one: it lives in localStorage as one JSON object
 * {"<image id>": "<delete key>"} under STORAGE_KEY. Private modes and full quotas make
 * localStorage throw; then nothing is remembered and the Delete button simply never shows.
 */
(function () {
  'use strict';

  var STORAGE_KEY = 'cloud-image-app:delete-keys';

  function read() {
    try {
      var keys = JSON.parse(window.localStorage.getItem(STORAGE_KEY) || '{}');
      return keys && typeof keys === 'object' && !Array.isArray(keys) ? keys : {};
    } catch (e) {
      return {};
    }
  }

  function write(keys) {
    try {
      window.localStorage.setItem(STORAGE_KEY, JSON.stringify(keys));
      return true;
    } catch (e) {
      return false;
    }
  }

  window.deleteKeys = {
    get: function (imageId) {
      var key = read()[imageId];
      return typeof key === 'string' && key ? key : null;
    },
    remember: function (imageId, key) {
      var keys = read();
      keys[imageId] = key;
      return write(keys);
    },
    forget: function (imageId) {
      var keys = read();
      if (Object.prototype.hasOwnProperty.call(keys, imageId)) {
        delete keys[imageId];
        write(keys);
      }
    }
  };
}());
