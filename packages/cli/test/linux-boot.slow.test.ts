// Boots Debian's i386 kernel with the busybox initramfs through
// `typevisor run` and checks what the guest itself reports. The guest is
// fetched once (apt-get download into the cache) like `typevisor guest fetch`.
import { createHash } from "node:crypto";
import { PassThrough } from "node:stream";
import { beforeAll, expect, it } from "vitest";
import { fetchDebianGuest, type DebianGuest } from "@typevisor/pc";
import { describeWithTools } from "@typevisor/test-support";
import { main } from "../src/main.js";

/** Runs `typevisor run` with `args`, returning status, stdout and stderr. */
async function run(args: string[]): Promise<{ status: number; out: string; err: string; arrivals: { at: number; length: number }[] }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = "";
  let err = "";
  const arrivals: { at: number; length: number }[] = [];
  stdout.on("data", (d) => {
    out += d;
    arrivals.push({ at: Date.now(), length: out.length });
  });
  stderr.on("data", (d) => (err += d));
  const status = await main(["run", ...args], { stdout, stderr, stdin: new PassThrough() });
  return { status, out, err, arrivals };
}

/** The text between `BEGIN name` and `END name` markers the guest printed. */
function section(out: string, name: string): string {
  const m = new RegExp(`BEGIN ${name}\\r?\\n([\\s\\S]*?)END ${name}`).exec(out);
  if (!m) throw new Error(`the guest printed no ${name} section:\n${out.slice(-3000)}`);
  return m[1];
}

describeWithTools(["apt-get", "dpkg"], "Debian Linux guest on typevisor", () => {
  let guest: DebianGuest;
  let result: Awaited<ReturnType<typeof run>>;

  beforeAll(async () => {
    guest = await fetchDebianGuest();
    // One boot runs every probe; each section is delimited so a failure names it.
    const script = [
      "echo BEGIN uname; uname -r; echo END uname",
      "echo BEGIN cpuinfo; cat /proc/cpuinfo; echo END cpuinfo",
      "echo BEGIN date; date +%s; echo END date",
      "echo BEGIN sha; yes typevisor | head -c 4194304 | sha256sum; echo END sha",
      "echo BEGIN sort; seq 1 5000 | sort -r | head -n 3; echo END sort",
      "echo BEGIN interrupts; cat /proc/interrupts; echo END interrupts",
    ].join("; ");
    result = await run(["--exec", script, "--append", "console=ttyS0", "--no-reboot", "--timeout", "1500"]);
  }, 1_600_000);

  it("powers off cleanly with status 0", () => {
    expect(result.err).toBe("");
    expect(result.out).toContain("reboot: Power down");
    expect(result.status).toBe(0);
  });

  it("runs the Debian kernel it was given", () => {
    expect(section(result.out, "uname").trim()).toBe(guest.kernelRelease);
    expect(result.out).toMatch(/Linux version 6\.\d+\.\d+-\d+-686/);
  });

  it("reports a CPU with an FPU and the features CPUID advertises", () => {
    const cpuinfo = section(result.out, "cpuinfo");
    expect(cpuinfo).toMatch(/^fpu\s*: yes/m);
    const flags = /^flags\s*: (.*)$/m.exec(cpuinfo)![1].split(" ");
    for (const f of ["fpu", "tsc", "cx8", "cmov", "mmx", "fxsr", "sse", "sse2"]) expect(flags).toContain(f);
  });

  it("takes timer and serial interrupts", () => {
    const lines = section(result.out, "interrupts").split("\n");
    const count = (name: string): number => {
      const line = lines.find((l) => new RegExp(`\\s${name}\\s*$`).test(l.trimEnd()));
      if (!line) throw new Error(`no ${name} line in /proc/interrupts:\n${lines.join("\n")}`);
      return Number(line.trim().split(/\s+/)[1]);
    };
    expect(count("timer")).toBeGreaterThan(100);
    expect(count("ttyS0")).toBeGreaterThan(0);
  });

  it("keeps the host's date (RTC read at boot, then the timer)", () => {
    const guestTime = Number(section(result.out, "date").trim());
    // Host time when the guest's answer reached us.
    const end = result.out.indexOf("END date");
    const hostTime = result.arrivals.find((a) => a.length > end)!.at / 1000;
    expect(Math.abs(guestTime - hostTime)).toBeLessThan(5);
  });

  it("computes what the host computes (sha256sum over 4 MiB, sort)", () => {
    const data = Buffer.alloc(4194304);
    const line = Buffer.from("typevisor\n");
    for (let i = 0; i < data.length; i++) data[i] = line[i % line.length];
    const expected = createHash("sha256").update(data).digest("hex");
    expect(section(result.out, "sha").trim()).toBe(`${expected}  -`);
    expect(section(result.out, "sort").trim().split(/\r?\n/)).toEqual(["999", "998", "997"]);
  });
});
