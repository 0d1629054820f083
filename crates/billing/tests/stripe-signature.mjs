// Signs or verifies a Stripe-Signature header with the official `stripe` npm package,
// the independent implementation the billing tests compare `signature.rs` against.
// Offline: only the package's webhook helpers run, no request is sent.
//
// The package is loaded from the node_modules directory named by
// TENANCY_TEST_STRIPE_NODE_MODULES. The payload is read, as raw bytes, from stdin.
//
//   node stripe-signature.mjs sign --secret S --timestamp T [--scheme v1]
//       prints the header `generateTestHeaderString` makes for the payload
//   node stripe-signature.mjs verify --secret S --header H --now T [--tolerance N]
//       checks the header with `constructEvent` as if received at unix time T
//
// Exit status: 0 signed / accepted; 1 refused (the reason on stderr); 2 anything
// else (bad arguments, package missing), so a broken setup never looks like a refusal.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

function fail(message) {
  process.stderr.write(`stripe-signature: ${message}\n`);
  process.exit(2);
}

const modules = process.env.TENANCY_TEST_STRIPE_NODE_MODULES;
if (!modules) {
  fail('TENANCY_TEST_STRIPE_NODE_MODULES is unset');
}

let Stripe;
try {
  // Resolve `stripe` as a module placed in that directory would.
  Stripe = createRequire(join(modules, 'resolve.cjs'))('stripe');
} catch (error) {
  fail(`cannot load the stripe package from ${modules}: ${error.message}`);
}
// A client is needed for its webhook helpers only; the key is never used.
const stripe = new Stripe('sk_test_offline');

let parsed;
try {
  parsed = parseArgs({
    allowPositionals: true,
    options: {
      secret: { type: 'string' },
      timestamp: { type: 'string' },
      scheme: { type: 'string' },
      header: { type: 'string' },
      now: { type: 'string' },
      tolerance: { type: 'string' },
    },
  });
} catch (error) {
  fail(error.message);
}
const { values, positionals } = parsed;

function integer(name) {
  const text = values[name];
  if (text === undefined || !/^-?[0-9]+$/.test(text)) {
    fail(`--${name} must be an integer`);
  }
  return Number(text);
}

if (values.secret === undefined) {
  fail('--secret is required');
}
const payload = readFileSync(0);

switch (positionals[0]) {
  case 'sign': {
    const header = stripe.webhooks.generateTestHeaderString({
      payload: payload.toString('utf8'),
      secret: values.secret,
      timestamp: integer('timestamp'),
      scheme: values.scheme,
    });
    process.stdout.write(`${header}\n`);
    break;
  }
  case 'verify': {
    if (values.header === undefined) {
      fail('--header is required');
    }
    const tolerance = values.tolerance === undefined ? undefined : integer('tolerance');
    // constructEvent takes the receiving time in milliseconds.
    const receivedAt = integer('now') * 1000;
    try {
      stripe.webhooks.constructEvent(
        payload,
        values.header,
        values.secret,
        tolerance,
        undefined,
        receivedAt,
      );
    } catch (error) {
      if (error && error.type === 'StripeSignatureVerificationError') {
        process.stderr.write(`refused: ${error.message}\n`);
        process.exit(1);
      }
      fail(`verification failed unexpectedly: ${error && error.stack}`);
    }
    process.stdout.write('accepted\n');
    break;
  }
  default:
    fail('the first argument must be `sign` or `verify`');
}
