/* Colour mode (Bootstrap's data-bs-theme): light, dark, or auto (follow prefers-color-scheme).
 *
 * Loaded without defer in <head> so the theme is on <html> before the first paint (no flash of
 * the wrong colours); the navbar's select is wired once the document is parsed. The choice lives
 * in localStorage under STORAGE_KEY; private modes that refuse storage just get "auto".
 */
(function () {
  'use strict';

  var STORAGE_KEY = 'cloud-image-app:theme';
  var CHOICES = ['auto', 'light', 'dark'];
  var root = document.documentElement;
  var query = window.matchMedia ? window.matchMedia('(prefers-color-scheme: dark)') : null;

  function stored() {
    try {
      var value = window.localStorage.getItem(STORAGE_KEY);
      return CHOICES.indexOf(value) >= 0 ? value : 'auto';
    } catch (e) {
      return 'auto';
    }
  }

  function store(choice) {
    try {
      if (choice === 'auto') window.localStorage.removeItem(STORAGE_KEY);
      else window.localStorage.setItem(STORAGE_KEY, choice);
    } catch (e) { /* not remembered: this page still switches */ }
  }

  function apply(choice) {
    var dark = choice === 'dark' || (choice === 'auto' && !!query && query.matches);
    root.setAttribute('data-bs-theme', dark ? 'dark' : 'light');
    root.dataset.themeChoice = choice;
  }

  apply(stored());
  root.classList.add('has-theme-script');

  if (query) {
    var follow = function () { if (stored() === 'auto') apply('auto'); };
    if (query.addEventListener) query.addEventListener('change', follow);
    else if (query.addListener) query.addListener(follow);
  }

  document.addEventListener('DOMContentLoaded', function () {
    var select = document.getElementById('theme-select');
    if (!select) return;
    select.value = stored();
    select.addEventListener('change', function () {
      var choice = CHOICES.indexOf(select.value) >= 0 ? select.value : 'auto';
      store(choice);
      apply(choice);
    });
  });
}());
