import { describe, expect, it } from "vitest";
import { main } from "./main.js";
import { COMMANDS } from "./commands.js";
import { CommandError } from "./command.js";
import { captureIo } from "./test-io.js";


describe("typevisor command line", () => {
  it("prints usage with --help and exits 0; without arguments exits 2", async () => {
    const c = captureIo();
    expect(await main(["--help"], c.io)).toBe(0);
    expect(c.out()).toContain("usage: typevisor <command>");
    expect(await main([], captureIo().io)).toBe(2);
  });

  it("rejects an unknown command on stderr with status 2", async () => {
    const c = captureIo();
    expect(await main(["frobnicate"], c.io)).toBe(2);
    expect(c.err()).toContain("unknown command 'frobnicate'");
  });

  it("turns a CommandError into a one-line message and its status", async () => {
    COMMANDS["fail-test"] = {
      summary: "test",
      load: async () => ({ name: "fail-test", summary: "test", run: async () => { throw new CommandError("bad option --x", 2); } }),
    };
    try {
      const c = captureIo();
      expect(await main(["fail-test"], c.io)).toBe(2);
      expect(c.err()).toBe("typevisor fail-test: bad option --x\n");
    } finally {
      delete COMMANDS["fail-test"];
    }
  });
});
