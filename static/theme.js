// Sets the page's theme before it is first painted (a plain script in <head>, so the page never
// flashes the other theme): the URL's `theme`, else the stored choice, else the OS setting.
// The chart's module script (prefs.js) reads and changes it from then on.
(function () {
  var chosen = null;
  try {
    chosen = new URLSearchParams(location.search).get('theme') || localStorage.getItem('candlewick.theme');
  } catch (e) {
    // storage can be disabled: follow the OS
  }
  var root = document.documentElement;
  if (chosen === 'light' || chosen === 'dark') {
    root.dataset.theme = chosen;
    root.dataset.themeChosen = chosen;
  } else {
    root.dataset.theme = matchMedia('(prefers-color-scheme: light)').matches ? 'light' : 'dark';
  }
})();
