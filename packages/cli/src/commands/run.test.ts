import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { describeWithTools, tempDir } from "@typevisor/test-support";
import { main } from "../main.js";
import { detectKernel, parseRunArgs, RUN_STATUS } from "./run.js";
import type { RunStats } from "./run-stats.js";
import { captureIo } from "../test-io.js";


describe("typevisor run arguments", () => {
  it("has defaults a newcomer expects", () => {
    const o = parseRunArgs([]);
    expect(o).toMatchObject({ modules: [], memory: 256 * 2 ** 20, smp: 1, serial: { kind: "stdio" }, debugcon: { kind: "none" }, noReboot: false, deterministic: false });
  });

  it("parses every option", () => {
    const o = parseRunArgs([
      "--kernel", "k", "--initrd", "i", "--append", "console=ttyS0", "--memory", "1G", "--smp", "2", "--serial", "file:/tmp/s",
      "--debugcon", "stdio", "--no-reboot", "--timeout", "1.5", "--deterministic",
      "--disk", "a.qcow2", "--disk", "b.img,format=raw,readonly", "--console", "none", "--rng", "--net", "switch=lan,mac=52:54:00:00:00:02",
    ]);
    expect(o).toEqual({
      kernel: "k", initrd: "i", append: "console=ttyS0", exec: undefined, modules: [], memory: 2 ** 30, smp: 2, serial: { kind: "file", path: "/tmp/s" },
      debugcon: { kind: "stdio" }, noReboot: true, timeout: 1.5, deterministic: true,
      disks: [{ path: "a.qcow2", format: undefined, readOnly: false }, { path: "b.img", format: "raw", readOnly: true }],
      console: { kind: "none" }, rng: true, nets: [{ switch: "lan", mac: "52:54:00:00:00:02", pcap: undefined }],
    });
  });

  it("rejects misuse with status 2 and a message naming the option", async () => {
    for (const [args, message] of [
      [["--memory", "12Q"], "--memory"],
      [["--memory", "4M"], "between 16M"],
      [["--smp", "0"], "--smp"],
      [["--timeout", "-1"], "--timeout"],
      [["--serial", "tcp:1"], "--serial must be"],
      [["--kernel", "k", "--exec", "ls"], "--exec works with the default guest"],
      [["--frob"], "Unknown option"],
      [["--disk", "x.img,format=vmdk"], "format must be qcow2 or raw"],
      [["--modules", "ext4;rm"], "--modules takes module names"],
      [["--kernel", "k", "--modules", "ext4"], "--modules works with the default guest only"],
      [["--net", "mac=01:00:00:00:00:01,switch=a"], "multicast"],
    ] as const) {
      const c = captureIo();
      expect(await main(["run", ...args], c.io)).toBe(RUN_STATUS.usage);
      expect(c.err()).toContain(message);
    }
  });

  it("explains a file that is no kernel", async () => {
    const dir = tempDir();
    try {
      const file = join(dir.path, "junk");
      writeFileSync(file, Buffer.alloc(10000, 7));
      const c = captureIo();
      expect(await main(["run", "--kernel", file, "--serial", "none"], c.io)).toBe(1);
      expect(c.err()).toContain("neither a bzImage");
    } finally {
      dir.remove();
    }
  });
});

describe("kernel detection", () => {
  it("finds a multiboot header with a valid checksum only", () => {
    const img = new Uint8Array(4096);
    const v = new DataView(img.buffer);
    v.setUint32(64, 0x1badb002, true);
    v.setUint32(68, 3, true);
    v.setUint32(72, -(0x1badb002 + 3) >>> 0, true);
    expect(detectKernel(img)).toBe("multiboot");
    v.setUint32(72, 0, true);
    expect(detectKernel(img)).toBeUndefined();
  });
});

const PROGRAM = `
bits 32
section .text
    dd 0x1BADB002, 0, -0x1BADB002
global _start
_start:
    mov esi, msg
.next:
    lodsb
    test al, al
    jz .done
    mov dx, 0x3f8 + 5          ; wait for THRE, then send on COM1
.wait:
    in al, dx
    test al, 0x20
    jz .wait
    mov al, [esi - 1]
    mov dx, 0x3f8
    out dx, al
    jmp .next
.done:
    mov al, [mode]
    cmp al, 't'
    je .triple
    cmp al, 'h'
    je .hang
    mov dx, 0xf4
    mov al, 0x2a
    out dx, al                 ; isa-debug-exit: status (0x2a << 1) | 1 = 85
.hang:
    cli
    hlt
    jmp .hang
.triple:
    lidt [bad_idt]
    int 3
section .data
msg: db "hello from the guest", 10, 0
mode: db 'MODE'
bad_idt: dw 0
         dd 0
`;

describeWithTools(["nasm", "ld"], "typevisor run with a multiboot guest", () => {
  /** Builds the program in `mode` into a scratch folder, runs `body` with it and captured I/O, then removes the folder. */
  async function withProgram(mode: string, body: (p: { file: string; dir: string; c: ReturnType<typeof captureIo> }) => Promise<void>): Promise<void> {
    const dir = tempDir();
    try {
      const asm = join(dir.path, "t.asm");
      writeFileSync(asm, PROGRAM.replace("'MODE'", `'${mode}'`));
      execFileSync("nasm", ["-f", "elf32", asm, "-o", join(dir.path, "t.o")]);
      execFileSync("ld", ["-m", "elf_i386", "-N", "--no-warn-rwx-segments", "-Ttext", "0x100000", "-e", "_start", "-o", join(dir.path, "t.elf"), join(dir.path, "t.o")]);
      await body({ file: join(dir.path, "t.elf"), dir: dir.path, c: captureIo() });
    } finally {
      dir.remove();
    }
  }

  it("streams the serial port and exits with the guest's isa-debug-exit status", () =>
    withProgram("e", async ({ file, c }) => {
      const status = await main(["run", "--kernel", file, "--deterministic"], c.io);
      expect(status).toBe(85);
      expect(c.out()).toBe("hello from the guest\n");
    }));

  it("writes --stats JSON: instructions, times, and per disk the backend's requests", () =>
    withProgram("e", async ({ file, dir, c }) => {
      const stats = join(dir, "stats.json");
      const disk = join(dir, "d.img");
      writeFileSync(disk, Buffer.alloc(1 << 20));
      expect(await main(["run", "--kernel", file, "--deterministic", "--disk", `${disk},format=raw`, "--stats", stats], c.io)).toBe(85);
      const s = JSON.parse(readFileSync(stats, "utf8")) as RunStats;
      // The program's serial loop: about 21 characters, each a handful of instructions plus THRE polls.
      expect(s.instructions).toBeGreaterThan(100);
      expect(s.wallSeconds).toBeGreaterThan(0);
      expect(s.stop).toEqual({ reason: "exit", exitCode: 85 });
      // The guest has no driver: the disk exists and saw no requests.
      expect(s.disks).toEqual([{ path: disk, busySeconds: 0, requests: { read: 0, write: 0, flush: 0, discard: 0, writeZeroes: 0 } }]);
    }));

  it("reports a triple fault with --no-reboot as status 3", () =>
    withProgram("t", async ({ file, c }) => {
      expect(await main(["run", "--kernel", file, "--no-reboot"], c.io)).toBe(RUN_STATUS.tripleFault);
      expect(c.err()).toMatch(/triple fault/);
    }));

  it("stops a hung guest on --timeout with status 124, and writes serial to a file", () =>
    withProgram("h", async ({ file, dir, c }) => {
      const log = join(dir, "serial.log");
      expect(await main(["run", "--kernel", file, "--timeout", "0.5", "--serial", `file:${log}`], c.io)).toBe(RUN_STATUS.timeout);
      expect(c.err()).toContain("timed out after 0.5 s");
      expect(readFileSync(log, "utf8")).toBe("hello from the guest\n");
    }));
});
