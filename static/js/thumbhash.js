/* Placeholders: paint each image's ThumbHash behind it while the real pixels load.
 *
 * An <img data-thumbhash="<base64>"> gets the hash decoded into a ~32 px picture, drawn on a
 * canvas and set as the image's background (a data: URL, which the CSP's img-src allows; a
 * style set from script is not an inline style). The background goes once the image has
 * loaded, so a transparent image never shows it through. A missing or broken hash paints
 * nothing: the frame's plain background stays, as for records made before placeholders.
 *
 * The decoder follows the ThumbHash format by Evan Wallace (MIT, evanw.github.io/thumbhash);
 * the server's encoder is imaging/processing/placeholder.py, and a browser test checks that this
 * decoder paints exactly the pixels the Python one computes.
 */
(function () {
  'use strict';

  // The (cx, cy) terms a channel keeps, DC first, in the format's order (a triangle).
  function terms(nx, ny) {
    var out = [];
    for (var cy = 0; cy < ny; cy++) {
      for (var cx = 0; cx * ny < nx * (ny - cy); cx++) out.push([cx, cy]);
    }
    return out;
  }

  function toRGBA(hash) {
    if (hash.length < 5) throw new Error('a ThumbHash has at least 5 bytes');
    var header24 = hash[0] | (hash[1] << 8) | (hash[2] << 16);
    var header16 = hash[3] | (hash[4] << 8);
    var hasAlpha = (header24 >> 23) !== 0;
    var landscape = (header16 >> 15) !== 0;
    var longSide = hasAlpha ? 5 : 7;
    var shortSide = header16 & 7;
    if (!shortSide) throw new Error('the ThumbHash has no aspect ratio');
    var lx = Math.max(3, landscape ? longSide : shortSide);
    var ly = Math.max(3, landscape ? shortSide : longSide);
    var start = hasAlpha ? 6 : 5;
    var index = 0;

    // Each AC term is a 4-bit nibble, low nibble first, scaled back from 0..15 to -1..1.
    function channel(nx, ny, dc, scale) {
      var kept = terms(nx, ny).slice(1);
      var ac = kept.map(function () {
        var byte = hash[start + (index >> 1)];
        if (byte === undefined) throw new Error('the ThumbHash is truncated');
        var nibble = (byte >> ((index++ & 1) << 2)) & 15;
        return (nibble / 7.5 - 1) * scale;
      });
      return { dc: dc, ac: ac, terms: kept };
    }

    // Saturation is boosted by 1.25 to make up for the quantisation (as the reference does).
    var l = channel(lx, ly, (header24 & 63) / 63, ((header24 >> 18) & 31) / 31);
    var p = channel(3, 3, ((header24 >> 6) & 63) / 31.5 - 1, 1.25 * ((header16 >> 3) & 63) / 63);
    var q = channel(3, 3, ((header24 >> 12) & 63) / 31.5 - 1, 1.25 * ((header16 >> 9) & 63) / 63);
    var a = hasAlpha ? channel(5, 5, (hash[5] & 15) / 15, (hash[5] >> 4) / 15) : null;

    var ratio = (landscape ? longSide : shortSide) / (landscape ? shortSide : longSide);
    var w = Math.round(ratio > 1 ? 32 : 32 * ratio);
    var h = Math.round(ratio > 1 ? 32 / ratio : 32);
    var rgba = new Uint8ClampedArray(w * h * 4);
    var fx = [];
    var fy = [];
    var n = Math.max(lx, ly, hasAlpha ? 5 : 3);

    function value(c) {
      var sum = c.dc;
      for (var j = 0; j < c.ac.length; j++) {
        sum += 2 * c.ac[j] * fx[c.terms[j][0]] * fy[c.terms[j][1]];
      }
      return sum;
    }

    for (var y = 0, i = 0; y < h; y++) {
      for (var k = 0; k < n; k++) fy[k] = Math.cos(Math.PI / h * (y + 0.5) * k);
      for (var x = 0; x < w; x++, i += 4) {
        for (k = 0; k < n; k++) fx[k] = Math.cos(Math.PI / w * (x + 0.5) * k);
        var lum = value(l);
        var pv = value(p);
        var qv = value(q);
        var b = lum - 2 / 3 * pv;
        var r = (3 * lum - b + qv) / 2;
        var g = r - qv;
        // Truncated like the reference's Uint8Array (Uint8ClampedArray would round).
        rgba[i] = Math.floor(255 * Math.min(1, Math.max(0, r)));
        rgba[i + 1] = Math.floor(255 * Math.min(1, Math.max(0, g)));
        rgba[i + 2] = Math.floor(255 * Math.min(1, Math.max(0, b)));
        rgba[i + 3] = a ? Math.floor(255 * Math.min(1, Math.max(0, value(a)))) : 255;
      }
    }
    return { width: w, height: h, rgba: rgba };
  }

  function fromBase64(text) {
    var binary = atob(text);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  var canvas = null; // one for every placeholder of the page

  function toDataURL(base64) {
    var image = toRGBA(fromBase64(base64));
    canvas = canvas || document.createElement('canvas');
    canvas.width = image.width;
    canvas.height = image.height;
    var context = canvas.getContext('2d');
    var pixels = context.createImageData(image.width, image.height);
    pixels.data.set(image.rgba);
    context.putImageData(pixels, 0, 0);
    return canvas.toDataURL('image/png');
  }

  function paint(img) {
    if (img.complete && img.naturalWidth > 0) return; // already here: nothing to stand in for
    var url;
    try {
      url = toDataURL(img.dataset.thumbhash);
    } catch (e) {
      return; // a broken hash: the frame's own background stays
    }
    img.style.backgroundImage = 'url("' + url + '")';
    img.style.backgroundSize = 'cover';
    img.style.backgroundPosition = 'center';
    img.classList.add('has-placeholder');
    img.addEventListener('load', function () {
      img.style.backgroundImage = '';
      img.classList.remove('has-placeholder');
    }, { once: true });
  }

  window.thumbhash = { toRGBA: toRGBA, toDataURL: toDataURL, fromBase64: fromBase64 };
  document.querySelectorAll('img[data-thumbhash]').forEach(paint);
}());
