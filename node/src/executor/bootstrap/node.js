// floe's Node.js bootstrap: runs `handler(event, context)` behind Lambda's
// Runtime API (2018-06-01), one invocation at a time, for as long as the
// sandbox lives. Async handlers and callback handlers both work. Uses only
// Node's standard library, and loads `url` only for ES modules (it costs
// start-up time).
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');

const [HOST, PORT] = process.env.AWS_LAMBDA_RUNTIME_API.split(':');
const BASE = '/2018-06-01/runtime';
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function request(method, urlPath, body, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: HOST, port: PORT, method, path: urlPath, agent, headers: headers || {} },
      (res) => {
        const chunks = [];
        res.on('data', (chunk) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      },
    );
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

function errorDocument(error, errorType) {
  const err = error instanceof Error ? error : new Error(String(error));
  return {
    errorType: errorType || err.name || 'Error',
    errorMessage: err.message,
    stackTrace: (err.stack || '').split('\n').slice(1).map((line) => line.trim()),
  };
}

function postJson(urlPath, document, errorType) {
  const headers = { 'Content-Type': 'application/json' };
  if (errorType) headers['Lambda-Runtime-Function-Error-Type'] = errorType;
  return request('POST', urlPath, JSON.stringify(document), headers);
}

async function initError(errorType, error) {
  await postJson(`${BASE}/init/error`, errorDocument(error, errorType), errorType);
  process.exit(1);
}

async function loadHandler() {
  const handler = process.env._HANDLER || '';
  const dot = handler.lastIndexOf('.');
  const moduleName = handler.slice(0, dot);
  const functionName = handler.slice(dot + 1);
  if (dot <= 0 || !functionName) {
    await initError('Runtime.MalformedHandlerName', new Error(`Bad handler '${handler}': expected module.function`));
  }
  const base = path.resolve(process.env.LAMBDA_TASK_ROOT || '.', moduleName);
  let mod;
  try {
    if (fs.existsSync(`${base}.mjs`)) {
      mod = await import(require('url').pathToFileURL(`${base}.mjs`).href);
    } else {
      try {
        mod = require(base);
      } catch (error) {
        if (error.code !== 'ERR_REQUIRE_ESM') throw error;
        mod = await import(require('url').pathToFileURL(`${base}.js`).href);
      }
    }
  } catch (error) {
    await initError('Runtime.ImportModuleError', error);
  }
  const fn = mod && (mod[functionName] || (mod.default && mod.default[functionName]));
  if (typeof fn !== 'function') {
    await initError('Runtime.HandlerNotFound', new Error(`${moduleName}.${functionName} is undefined or not exported`));
  }
  return fn;
}

function makeContext(headers) {
  const deadline = Number(headers['lambda-runtime-deadline-ms'] || 0);
  const parse = (text) => (text ? JSON.parse(text) : undefined);
  return {
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
    invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    awsRequestId: headers['lambda-runtime-aws-request-id'],
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: parse(headers['lambda-runtime-client-context']),
    identity: parse(headers['lambda-runtime-cognito-identity']),
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
}

function run(fn, event, context) {
  if (fn.length >= 3) {
    return new Promise((resolve, reject) => {
      const callback = (error, result) => (error ? reject(error) : resolve(result));
      const maybe = fn(event, context, callback);
      if (maybe && typeof maybe.then === 'function') maybe.then(resolve, reject);
    });
  }
  return Promise.resolve().then(() => fn(event, context));
}

async function main() {
  const fn = await loadHandler();
  for (;;) {
    const next = await request('GET', `${BASE}/invocation/next`);
    const requestId = next.headers['lambda-runtime-aws-request-id'];
    process.env._X_AMZN_TRACE_ID = next.headers['lambda-runtime-trace-id'] || '';
    let event;
    try {
      event = next.body.length ? JSON.parse(next.body.toString('utf8')) : undefined;
    } catch (error) {
      await postJson(`${BASE}/invocation/${requestId}/error`, errorDocument(error, 'Runtime.UnmarshalError'), 'Runtime.UnmarshalError');
      continue;
    }
    try {
      const result = await run(fn, event, makeContext(next.headers));
      const body = JSON.stringify(result === undefined ? null : result);
      await request('POST', `${BASE}/invocation/${requestId}/response`, body, { 'Content-Type': 'application/json' });
    } catch (error) {
      console.error(error);
      await postJson(`${BASE}/invocation/${requestId}/error`, errorDocument(error), 'Unhandled');
    }
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
