import { readFileSync } from "node:fs";
import { join } from "node:path";
import { VirtualClock } from "@typevisor/hv-core";
import { tempDir } from "@typevisor/test-support";
import { expect, it } from "vitest";
import { fileSerial } from "./serial-file.js";
import { Uart16550 } from "./uart-16550.js";

it("fileSerial writes what the guest transmits to a file", async () => {
  const dir = tempDir("tv-serial-");
  try {
    const path = join(dir.path, "console.log");
    const backend = fileSerial(path);
    const uart = new Uart16550("uart@3f8", new VirtualClock({ mode: "deterministic" }), undefined, backend);
    for (const c of "boot log\n") uart.handler.write(0, 1, c.charCodeAt(0));
    uart.close();
    await backend.closed;
    expect(readFileSync(path, "utf8")).toBe("boot log\n");
  } finally {
    dir.remove();
  }
});
