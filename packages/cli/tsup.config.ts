import { readFileSync } from "node:fs";
import { defineConfig } from "tsup";

const version = JSON.parse(readFileSync("package.json", "utf8")).version as string;
const define = { __CLI_VERSION__: JSON.stringify(version) };

export default defineConfig([
  {
    entry: ["src/index.ts"],
    format: ["esm", "cjs"],
    dts: true,
    sourcemap: true,
    clean: true,
    target: "node20",
    define,
  },
  {
    entry: ["src/bin.ts"],
    format: ["esm"],
    sourcemap: true,
    target: "node20",
    banner: { js: "#!/usr/bin/env node" },
    define,
  },
]);
