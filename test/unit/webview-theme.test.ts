// Series colours stay visible on the theme's background: WCAG contrast against closed forms, and the
// adjustment that lifts a colour a theme gives too dark (issue 17, item 9: expert 1 on Dark Modern).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MIN_SERIES_CONTRAST, contrastRatio, extraColor, relativeLuminance, withContrast, type Rgb } from '../../webview/theme';

const rgb = (r: number, g: number, b: number): Rgb => ({ r, g, b, a: 1 });
const black = rgb(0, 0, 0);
const white = rgb(255, 255, 255);

test('relative luminance and contrast ratio: closed forms', () => {
  assert.equal(relativeLuminance(black), 0);
  assert.equal(relativeLuminance(white), 1);
  assert.ok(Math.abs(contrastRatio(black, white) - 21) < 1e-12);
  assert.equal(contrastRatio(white, black), contrastRatio(black, white), 'symmetric');
  assert.equal(contrastRatio(rgb(120, 30, 200), rgb(120, 30, 200)), 1);
  // sRGB 128 grey: ((128/255 + 0.055)/1.055)^2.4 = 0.2158605
  assert.ok(Math.abs(relativeLuminance(rgb(128, 128, 128)) - 0.2158605) < 1e-6);
});

test('a colour already visible is kept as it is; a dark one on a dark background is lifted just past 3:1', () => {
  const darkBg = rgb(0x1f, 0x1f, 0x1f);
  const blue = rgb(0x37, 0x94, 0xff);
  assert.equal(withContrast(blue, darkBg), blue, 'VS Code blue on a dark editor: unchanged');
  const brown = rgb(0x7a, 0x3e, 0x12);
  assert.ok(contrastRatio(brown, darkBg) < MIN_SERIES_CONTRAST, 'the planted colour is hard to see');
  const lifted = withContrast(brown, darkBg);
  const ratio = contrastRatio(lifted, darkBg);
  assert.ok(ratio >= MIN_SERIES_CONTRAST && ratio < MIN_SERIES_CONTRAST + 0.1, `lifted just enough: ${ratio}`);
  assert.ok(relativeLuminance(lifted) > relativeLuminance(brown), 'lighter, on a dark background');
  assert.ok(lifted.r >= lifted.g && lifted.g >= lifted.b, 'still the same hue family (mixed towards white)');
  // On a light background a pale yellow is darkened instead.
  const lightBg = rgb(255, 255, 255);
  const pale = rgb(0xee, 0xdd, 0x88);
  const darker = withContrast(pale, lightBg);
  assert.ok(contrastRatio(darker, lightBg) >= MIN_SERIES_CONTRAST);
  assert.ok(relativeLuminance(darker) < relativeLuminance(pale));
});

test('the extra hues for many units are all visible once adjusted, on dark and light backgrounds', () => {
  for (const bg of [rgb(0x1e, 0x1e, 0x1e), rgb(255, 255, 255)]) {
    for (let i = 0; i < 64; i++) assert.ok(contrastRatio(withContrast(extraColor(i), bg), bg) >= MIN_SERIES_CONTRAST, `hue ${i}`);
  }
});
