// Both themes of static/chart.css pass WCAG 2 AA for text: every colour the page writes text in
// has a contrast ratio of at least 4.5:1 against every background text is written on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

const css = readFileSync(new URL('../../static/chart.css', import.meta.url), 'utf8');

const TEXT = ['--fg', '--muted', '--accent', '--up', '--down', '--warn'];
/** Backgrounds text sits on; the legend's is translucent over the chart. */
const BACKGROUNDS = ['--bg', '--panel', '--chart-bg', 'legend'];
const AA = 4.5;

/** The custom properties declared in the rule whose selector is exactly `selector`. */
function variables(selector) {
  const at = css.indexOf(`${selector} {`);
  assert.ok(at >= 0, `chart.css has a \`${selector}\` rule`);
  const body = css.slice(at, css.indexOf('}', at));
  return Object.fromEntries([...body.matchAll(/(--[\w-]+):\s*([^;]+);/g)].map((m) => [m[1], m[2].trim()]));
}

/** [r, g, b, a] of `#rrggbb` or `rgba(r, g, b, a)`. */
function parse(color) {
  const hex = /^#([0-9a-f]{6})$/i.exec(color);
  if (hex) return [0, 2, 4].map((i) => parseInt(hex[1].slice(i, i + 2), 16)).concat(1);
  const rgba = /^rgba?\(([^)]+)\)$/.exec(color);
  assert.ok(rgba, `unsupported colour ${color}`);
  const [r, g, b, a = 1] = rgba[1].split(',').map(Number);
  return [r, g, b, a];
}

/** `top` (translucent) drawn over the opaque `bottom`. */
const over = (top, bottom) => [0, 1, 2].map((i) => top[i] * top[3] + bottom[i] * (1 - top[3])).concat(1);

function luminance([r, g, b]) {
  const linear = (c) => {
    const s = c / 255;
    return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  };
  return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
}

function contrast(a, b) {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

test('the contrast formula gives the known extremes', () => {
  assert.equal(contrast(parse('#000000'), parse('#ffffff')), 21);
  assert.equal(contrast(parse('#777777'), parse('#777777')), 1);
  // #767676 on white is the familiar lightest AA grey.
  assert.ok(contrast(parse('#767676'), parse('#ffffff')) >= AA);
  assert.ok(contrast(parse('#777777'), parse('#ffffff')) < AA);
});

for (const [theme, selector] of [['dark', ':root'], ['light', ':root[data-theme="light"]']]) {
  test(`text in the ${theme} theme passes WCAG AA on every background`, () => {
    const vars = variables(selector);
    const color = (name) => {
      assert.ok(vars[name], `${theme} theme defines ${name}`);
      return parse(vars[name]);
    };
    const failures = [];
    for (const bgName of BACKGROUNDS) {
      const bg = bgName === 'legend' ? over(color('--legend-bg'), color('--chart-bg')) : color(bgName);
      for (const fg of TEXT) {
        const ratio = contrast(color(fg), bg);
        if (ratio < AA) failures.push(`${fg} on ${bgName}: ${ratio.toFixed(2)}:1`);
      }
    }
    assert.deepEqual(failures, [], `${theme} theme below ${AA}:1`);
  });
}
