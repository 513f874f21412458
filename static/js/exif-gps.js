/* Does a JPEG carry a GPS position? Read in the browser from the file's own bytes; nothing is sent.
 *
 * JPEG: SOI, then segments (FF xx, big-endian length) until the scan starts. The EXIF APP1 segment
 * ("Exif\0\0") holds a TIFF structure whose first IFD may point (tag 0x8825) to the GPS IFD; a
 * position is there when that IFD has latitude (0x0002) and longitude (0x0004). Every offset is
 * bounds-checked: a truncated or hostile file just reads as "no position".
 *
 * window.exifGps.hasPosition(file) -> Promise<boolean>
 */
(function () {
  'use strict';

  // EXIF lives in the first segments; 256 KiB covers it with embedded thumbnails.
  var HEAD_BYTES = 256 * 1024;
  var GPS_IFD_POINTER = 0x8825;
  var GPS_LATITUDE = 0x0002;
  var GPS_LONGITUDE = 0x0004;

  function tiffHasPosition(view, start, end) {
    if (end - start < 8) return false;
    var order = view.getUint16(start);
    if (order !== 0x4949 && order !== 0x4d4d) return false;
    var little = order === 0x4949;
    if (view.getUint16(start + 2, little) !== 42) return false;

    function tags(ifdOffset) {
      var at = start + ifdOffset;
      if (ifdOffset < 8 || at + 2 > end) return null;
      var count = view.getUint16(at, little);
      if (at + 2 + count * 12 > end) return null;
      var found = {};
      for (var i = 0; i < count; i += 1) {
        var entry = at + 2 + i * 12;
        found[view.getUint16(entry, little)] = view.getUint32(entry + 8, little);
      }
      return found;
    }

    var ifd0 = tags(view.getUint32(start + 4, little));
    if (!ifd0 || !Object.prototype.hasOwnProperty.call(ifd0, GPS_IFD_POINTER)) return false;
    var gps = tags(ifd0[GPS_IFD_POINTER]);
    return !!gps && Object.prototype.hasOwnProperty.call(gps, GPS_LATITUDE) &&
      Object.prototype.hasOwnProperty.call(gps, GPS_LONGITUDE);
  }

  function jpegHasPosition(buffer) {
    var view = new DataView(buffer);
    if (view.byteLength < 4 || view.getUint16(0) !== 0xffd8) return false;
    var at = 2;
    while (at + 4 <= view.byteLength) {
      if (view.getUint8(at) !== 0xff) return false;
      var marker = view.getUint8(at + 1);
      if (marker === 0xff) { at += 1; continue; }  // fill byte
      if (marker === 0xda || marker === 0xd9) return false;  // scan data or end: no EXIF before it
      var length = view.getUint16(at + 2);
      if (length < 2) return false;
      var body = at + 4;
      var bodyEnd = Math.min(at + 2 + length, view.byteLength);
      if (marker === 0xe1 && bodyEnd - body >= 6 && view.getUint32(body) === 0x45786966 &&
          view.getUint16(body + 4) === 0) {
        if (tiffHasPosition(view, body + 6, bodyEnd)) return true;
      }
      at += 2 + length;
    }
    return false;
  }

  window.exifGps = {
    hasPosition: function (file) {
      return file.slice(0, HEAD_BYTES).arrayBuffer()
        .then(jpegHasPosition)
        .catch(function () { return false; });
    }
  };
}());
