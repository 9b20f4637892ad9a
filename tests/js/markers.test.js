// What a correction marker's tooltip says about each change from `/api/corrections`.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { describeChange } from '../../static/markers.js';

const utc = (options) => new Intl.DateTimeFormat('en-US', { timeZone: 'UTC', hourCycle: 'h23', ...options });
const fmt = {
  price: (v) => v.toFixed(2),
  volume: (v) => String(v),
  time: (t) => utc({ hour: '2-digit', minute: '2-digit' }).format(new Date(t * 1000)),
  clock: (t) => utc({ hour: '2-digit', minute: '2-digit', second: '2-digit' }).format(new Date(t * 1000)),
  zone: () => 'UTC',
};

const change = (action, before, after) => ({
  at: '2024-07-03T09:00:00Z', by: 'api token', action, time: '2024-07-03T06:25:13Z', before, after,
});

test('an update names only what changed, old → new', () => {
  assert.equal(
    describeChange(change('update', { price: 61000, volume: 0.5 }, { price: 60500, volume: 0.5 }), fmt),
    '09:00 UTC, api token: tick at 06:25:13 price 61000.00 → 60500.00',
  );
  assert.equal(
    describeChange(change('update', { price: 1, volume: 0.5 }, { price: 2, volume: 0.75 }), fmt),
    '09:00 UTC, api token: tick at 06:25:13 price 1.00 → 2.00, volume 0.5 → 0.75',
  );
});

test('inserts and deletes name the tick they added or removed', () => {
  assert.equal(
    describeChange(change('insert', null, { price: 3, volume: 2 }), fmt),
    '09:00 UTC, api token: added a tick at 06:25:13 (price 3.00, volume 2)',
  );
  assert.equal(
    describeChange(change('delete', { price: 3, volume: 2 }, null), fmt),
    '09:00 UTC, api token: deleted the tick at 06:25:13 (price 3.00, volume 2)',
  );
});

test('a price or volume another program left empty shows as a dash, not as zero', () => {
  assert.equal(
    describeChange(change('update', { price: null, volume: null }, { price: 5, volume: 1 }), fmt),
    '09:00 UTC, api token: tick at 06:25:13 price — → 5.00, volume — → 1',
  );
});
