// Boots Debian's i386 kernel with the busybox initramfs through
// `typevisor run` and checks what the guest itself reports. The guest is
// fetched once (apt-get download into the cache) like `typevisor guest fetch`.
import { createHash } from "node:crypto";
import { beforeAll, expect, it } from "vitest";
import { fetchDebianGuest, type DebianGuest } from "@typevisor/pc";
import { describeWithTools } from "@typevisor/test-support";
import { probe, runGuest, section, type GuestRun } from "./guest-run.js";

describeWithTools(["apt-get", "dpkg"], "Debian Linux guest on typevisor", () => {
  let guest: DebianGuest;
  let result: GuestRun;

  beforeAll(async () => {
    guest = await fetchDebianGuest();
    // One boot runs every probe; each section is delimited so a failure names it.
    const script = [
      probe("uname", "uname -r"),
      probe("cpuinfo", "cat /proc/cpuinfo"),
      probe("random", "dmesg | grep -c 'random: crng init [d]one'"),
      probe("date", "date +%s"),
      probe("clocksource", "cat /sys/devices/system/clocksource/clocksource0/current_clocksource; dmesg | grep -c 'tsc: Detected 1000[.]000 MHz'"),
      probe("sha", "yes typevisor | head -c 4194304 | sha256sum"),
      probe("sort", "seq 1 5000 | sort -r | head -n 3"),
      probe("interrupts", "cat /proc/interrupts"),
    ].join("; ");
    result = await runGuest(["--exec", script, "--append", "console=ttyS0", "--no-reboot", "--timeout", "1500"]);
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
    for (const f of ["fpu", "tsc", "cx8", "cmov", "mmx", "fxsr", "sse", "sse2", "rdrand", "rdseed"]) expect(flags).toContain(f);
  });

  it("has its random pool ready at boot (seeded from RDRAND/RDSEED)", () => {
    // Without a CPU generator the pool fills from interrupt timing only, long after /init starts.
    // (The pattern is bracketed so that the kernel command line, which holds this script, does not match.)
    expect(section(result.out, "random").trim()).toBe("1");
  });

  it("takes timer and serial interrupts", () => {
    const lines = section(result.out, "interrupts").split("\n");
    const count = (name: string): number => {
      const line = lines.find((l) => new RegExp(`\\s${name}\\s*$`).test(l.trimEnd()));
      if (!line) throw new Error(`no ${name} line in /proc/interrupts:\n${lines.join("\n")}`);
      return Number(line.trim().split(/\s+/)[1]);
    };
    // The PIT ("timer", IRQ 0) ticks until the local APIC timer ("LOC")
    // takes over; a tickless kernel then takes few, so count both.
    const ticks = count("timer") + count("Local timer interrupts");
    expect(ticks).toBeGreaterThan(100);
    expect(count("Local timer interrupts")).toBeGreaterThan(0);
    expect(count("ttyS0")).toBeGreaterThan(0);
  });

  it("keeps the host's date (RTC read at boot, then the TSC it trusts)", () => {
    // CPUID 15H gives the TSC rate (no PIT calibration), and an invariant TSC
    // with TSC_ADJUST needs no watchdog: the guest keeps time on the TSC,
    // which is the machine's clock, however slow or busy the host is.
    expect(section(result.out, "clocksource").trim().split(/\r?\n/)).toEqual(["tsc", "1"]);
    const guestTime = Number(section(result.out, "date").trim());
    // Host time when the guest's answer reached us.
    // (The command line the kernel echoes at boot holds "END date" too: look after the output's BEGIN.)
    const end = result.out.indexOf("END date", result.out.search(/BEGIN date\r?\n/));
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
