import { packageTestConfig } from "../../vitest.shared";

// Every test runs on the interpreter alone, and the fast ones again with the block
// compiler compiling each block the first time it runs (so the hardware
// differential, bare-metal and self-modifying-code programs all execute as
// generated JavaScript). Linux boots exercise the default threshold.
const base = packageTestConfig();
export default {
  ...base,
  test: {
    ...base.test,
    projects: [
      { extends: true, test: { name: "interpreter", env: { TYPEVISOR_JIT: "off" } } },
      // The slow suites (tens of thousands of one-shot cases) run interpreted
      // only: compiling every block the first time costs more than the
      // cases, and the fast suites already run the same generators compiled.
      { extends: true, test: { name: "compiled", env: { TYPEVISOR_JIT: "0" }, exclude: [...(base.test?.exclude ?? []), "**/*.slow.test.ts"] } },
    ],
  },
};
