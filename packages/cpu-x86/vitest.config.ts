import { packageTestConfig } from "../../vitest.shared";

// Every test runs twice: on the interpreter alone, and with the block
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
      { extends: true, test: { name: "compiled", env: { TYPEVISOR_JIT: "0" } } },
    ],
  },
};
