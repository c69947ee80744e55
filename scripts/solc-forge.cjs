#!/usr/bin/env node
// A `solc` stand-in for forge, backed by the solc-js wasm build in node_modules (docs/development.md:
// forge cannot download a native solc offline). It answers the only two calls forge makes:
//   solc --version                  -> the same two lines a native solc prints
//   solc --standard-json [flags]    -> standard JSON from stdin, compiled, JSON to stdout
// Imports that forge did not inline are read from disk, relative to the cwd, --base-path and
// every --include-path, so remappings and relative imports behave as with a native solc.
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const args = process.argv.slice(2);

if (args.includes('--version')) {
  process.stdout.write(
    'solc, the solidity compiler commandline interface\nVersion: ' + solc.version() + '\n',
  );
  process.exit(0);
}

if (!args.includes('--standard-json')) {
  process.stderr.write('solc-forge.cjs: only --version and --standard-json are supported\n');
  process.exit(2);
}

function flagValues(name) {
  const out = [];
  args.forEach((arg, i) => {
    if (arg === name && i + 1 < args.length) out.push(args[i + 1]);
    else if (arg.startsWith(name + '=')) out.push(arg.slice(name.length + 1));
  });
  return out;
}

const roots = [process.cwd(), ...flagValues('--base-path'), ...flagValues('--include-path')];

function findImports(importPath) {
  const candidates = path.isAbsolute(importPath)
    ? [importPath]
    : roots.map((root) => path.resolve(root, importPath));
  for (const candidate of candidates) {
    try {
      return { contents: fs.readFileSync(candidate, 'utf8') };
    } catch (_err) {
      // try the next root
    }
  }
  return { error: 'File not found: ' + importPath };
}

const input = fs.readFileSync(0, 'utf8');
process.stdout.write(solc.compile(input, { import: findImports }));
