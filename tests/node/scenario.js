#!/usr/bin/env node
// A Node.js backend service calling orgd, as a deploy or billing service of the
// platform would: stubs loaded from proto/ at run time (@grpc/proto-loader), a
// service token, users named by the identity provider's subject.
//
// tests/node_client.rs runs it against a test orgd, where "alice" owns two
// organizations and "bob" is a developer in the first. It can also run against
// `cargo run -- serve --service-subjects deploy` after setting that up by hand:
//
//   npm ci --prefix target/node-client   (with tests/node/package*.json copied there)
//   NODE_PATH=target/node-client/node_modules ORGD_ADDR=127.0.0.1:50051 \
//     ORGD_SERVICE_TOKEN=$(cargo run -q -- token --sub deploy --service) \
//     ORGD_FIRST_ORG=organizations/… ORGD_SECOND_ORG=organizations/… node tests/node/scenario.js
//
// Progress goes to stderr; the last stdout line is `scenario-complete`, and it
// exits 0 only when every assertion held.
'use strict';

const assert = require('node:assert/strict');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobufjs = require('protobufjs');

const REPO = path.resolve(__dirname, '..', '..');
const PROTO_DIR = path.join(REPO, 'proto');
const DEADLINE_MS = 30_000;

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`set ${name}`);
  return value;
}

function step(text) {
  process.stderr.write(`scenario: ${text}\n`);
}

// PermissionService and every type it uses.
const definition = protoLoader.loadSync(
  ['orgd/v1/permission.proto'],
  { includeDirs: [PROTO_DIR], keepCase: false, longs: String, enums: String, defaults: true, oneofs: true },
);
const Permissions = grpc.loadPackageDefinition(definition).orgd.v1.PermissionService;
// The error model's types, to decode `grpc-status-details-bin` with.
const errorModel = new protobufjs.Root();
errorModel.resolvePath = (_origin, target) => path.join(PROTO_DIR, target);
errorModel.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto']);

/// The google.rpc.Status a refusal carries in `grpc-status-details-bin`, with
/// each detail unpacked by its type URL.
function errorDetails(error) {
  const [bytes] = error.metadata.get('grpc-status-details-bin');
  assert.ok(bytes, `no grpc-status-details-bin on ${error.message}`);
  const status = errorModel.lookupType('google.rpc.Status').decode(bytes);
  return status.details.map((any) => {
    // protobufjs's built-in Any keeps its proto field names.
    const name = any.type_url.split('/').pop();
    return { type: name, value: errorModel.lookupType(name).decode(any.value) };
  });
}

function call(client, method, request) {
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${env('ORGD_SERVICE_TOKEN')}`);
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + DEADLINE_MS }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
}

async function main() {
  const client = new Permissions(env('ORGD_ADDR'), grpc.credentials.createInsecure());
  const first = env('ORGD_FIRST_ORG');
  const second = env('ORGD_SECOND_ORG');

  step('CheckPermission: bob by subject, in an organization the service holds no token for');
  const allowed = await call(client, 'CheckPermission', {
    user: 'subjects/bob',
    organization: first,
    permission: 'projects.create',
  });
  assert.deepEqual([allowed.allowed, allowed.reason], [true, 'REASON_ALLOWED']);
  const outside = await call(client, 'CheckPermission', {
    user: 'subjects/bob',
    organization: second,
    permission: 'projects.create',
  });
  assert.deepEqual([outside.allowed, outside.reason], [false, 'REASON_NOT_MEMBER']);
  const stranger = await call(client, 'CheckPermission', {
    user: `subjects/${encodeURIComponent('auth0|never-seen')}`,
    organization: first,
    permission: 'org.read',
  });
  assert.deepEqual([stranger.allowed, stranger.reason], [false, 'REASON_NOT_MEMBER']);

  step('CheckPermissions: one batch, each answer under its correlation id');
  const checks = [
    { correlationId: 'bob-deploys', organization: first, user: 'subjects/bob', permission: 'projects.create' },
    { correlationId: 'bob-bills', organization: first, user: 'subjects/bob', permission: 'billing.manage' },
    { correlationId: 'alice-second', organization: second, user: 'subjects/alice', permission: 'org.delete' },
    { correlationId: 'typo', organization: first, user: 'subjects/alice', permission: 'members.mange' },
  ];
  const { results } = await call(client, 'CheckPermissions', { checks });
  assert.deepEqual(
    results.map((r) => r.correlationId),
    checks.map((c) => c.correlationId),
  );
  const byId = Object.fromEntries(results.map((r) => [r.correlationId, r]));
  assert.equal(byId['bob-deploys'].result.allowed, true);
  assert.deepEqual(
    [byId['bob-bills'].result.allowed, byId['bob-bills'].result.reason],
    [false, 'REASON_LACKS_PERMISSION'],
  );
  assert.equal(byId['alice-second'].result.allowed, true);
  // The one bad item fails alone, with its own google.rpc.Status.
  assert.equal(byId.typo.outcome, 'error');
  assert.equal(byId.typo.error.code, grpc.status.INVALID_ARGUMENT);
  assert.match(byId.typo.error.message, /did you mean 'members\.manage'/);

  step('LookupOrganizations: where alice may delete, one page at a time');
  const names = [];
  let pageToken = '';
  do {
    const page = await call(client, 'LookupOrganizations', {
      user: 'subjects/alice',
      permission: 'org.delete',
      pageSize: 1,
      pageToken,
    });
    assert.ok(page.organizations.length <= 1);
    names.push(...page.organizations.map((org) => org.name));
    pageToken = page.nextPageToken;
  } while (pageToken);
  for (const org of [first, second]) {
    assert.ok(names.includes(org), `${org} among ${names}`);
  }

  step('A refusal: its google.rpc error details, decoded');
  await assert.rejects(
    call(client, 'CheckPermission', { user: 'people/bob', organization: first, permission: 'org.read' }),
    (error) => {
      assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
      const details = errorDetails(error);
      const info = details.find((d) => d.type === 'google.rpc.ErrorInfo');
      assert.ok(info, `ErrorInfo among ${JSON.stringify(details)}`);
      assert.equal(info.value.domain, 'orgd');
      assert.ok(info.value.reason, 'a machine-readable reason');
      const badRequest = details.find((d) => d.type === 'google.rpc.BadRequest');
      assert.equal(badRequest.value.fieldViolations[0].field, 'user');
      return true;
    },
  );

  client.close();
  process.stdout.write('scenario-complete\n');
}

main().catch((error) => {
  process.stderr.write(`scenario failed: ${error.stack || error}\n`);
  process.exit(1);
});
