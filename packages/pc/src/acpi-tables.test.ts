import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describeWithTools, tempDir } from "@typevisor/test-support";
import { afterAll, describe, expect, it } from "vitest";
import { acpiChecksum, buildAcpiTables, buildDsdtAml, type AcpiTables } from "./acpi-tables.js";
import * as aml from "./aml.js";
import { SLP_TYP_S5 } from "./acpi-pm.js";

const t = buildAcpiTables(0xe0000, { cpus: 2 });
const view = new DataView(t.bytes.buffer);
const at = (addr: number): number => addr - t.base;
const tableBytes = (tables: AcpiTables, sig: string): Uint8Array => {
  const { address, length } = tables.tables[sig];
  return tables.bytes.subarray(address - tables.base, address - tables.base + length);
};

describe("ACPI tables", () => {
  it("has valid checksums and an RSDP with both checksums (ACPI 6.5 §5.2.5.3)", () => {
    const rsdp = t.bytes.subarray(0, 36);
    expect(new TextDecoder().decode(rsdp.subarray(0, 8))).toBe("RSD PTR ");
    expect(acpiChecksum(rsdp.subarray(0, 20))).toBe(0);
    expect(acpiChecksum(rsdp)).toBe(0);
    expect(t.rsdp % 16).toBe(0);
    for (const sig of ["DSDT", "FACP", "APIC", "MCFG", "RSDT", "XSDT"]) {
      const b = tableBytes(t, sig);
      expect(acpiChecksum(b), sig).toBe(0);
      expect(view.getUint32(at(t.tables[sig].address) + 4, true), `${sig} length`).toBe(b.length);
    }
    expect(t.tables.FACS.address % 64).toBe(0);
  });

  it("links RSDP -> XSDT/RSDT -> FADT, MADT, MCFG and FADT -> FACS, DSDT", () => {
    const xsdt = view.getUint32(24, true);
    expect(xsdt).toBe(t.tables.XSDT.address);
    const n = (t.tables.XSDT.length - 36) / 8;
    const entries = Array.from({ length: n }, (_, i) => view.getUint32(at(xsdt) + 36 + i * 8, true));
    const sigs = entries.map((a) => new TextDecoder().decode(t.bytes.subarray(at(a), at(a) + 4)));
    expect(sigs).toEqual(["FACP", "APIC", "MCFG"]);
    const rsdt = view.getUint32(16, true);
    expect(Array.from({ length: n }, (_, i) => view.getUint32(at(rsdt) + 36 + i * 4, true))).toEqual(entries);
    const fadt = at(t.tables.FACP.address);
    expect(view.getUint32(fadt + 36, true)).toBe(t.tables.FACS.address);
    expect(view.getUint32(fadt + 40, true)).toBe(t.tables.DSDT.address);
    expect(view.getUint32(fadt + 140, true)).toBe(t.tables.DSDT.address);
  });

  it("fits in the BIOS area where the RSDP scan looks", () => {
    expect(t.base + t.bytes.length).toBeLessThan(0x100000);
  });

  it("rejects impossible options", () => {
    expect(() => buildAcpiTables(0xe0008, { cpus: 1 })).toThrow(/aligned/);
    expect(() => buildAcpiTables(0xe0000, { cpus: 0 })).toThrow(/CPUs/);
  });
});

describe("AML encoder", () => {
  it("encodes package lengths of every size class (§20.2.4)", () => {
    expect(aml.pkgLength(10)).toEqual([11]);
    expect(aml.pkgLength(62)).toEqual([63]);
    expect(aml.pkgLength(63)).toEqual([0x40 | (65 & 0xf), 65 >> 4]);
    expect(aml.pkgLength(4000)).toEqual([0x40 | (4002 & 0xf), 4002 >> 4]);
    expect(aml.pkgLength(5000)).toEqual([0x80 | (5003 & 0xf), (5003 >> 4) & 0xff, 5003 >> 12]);
    expect(aml.pkgLength(100000)).toEqual([0x80 | (100003 & 0xf), (100003 >> 4) & 0xff, 100003 >> 12]);
  });

  it("encodes names, integers and EISA IDs", () => {
    expect(aml.nameString("\\_SB.PCI0")).toEqual([0x5c, 0x2e, ..."_SB_PCI0"].map((c) => (typeof c === "string" ? c.charCodeAt(0) : c)));
    expect(aml.integer(0x1234)).toEqual([0x0b, 0x34, 0x12]);
    expect(aml.integer(2 ** 32)).toEqual([0x0e, 0, 0, 0, 0, 1, 0, 0, 0]);
    expect(aml.eisaId("PNP0A03")).toEqual([0x0c, 0x41, 0xd0, 0x0a, 0x03]);
    expect(() => aml.nameString("toolong")).toThrow(RangeError);
  });
});

describeWithTools(["iasl", "acpiexec"], "ACPI tables checked by ACPICA (iasl, acpiexec)", () => {
  const dir = tempDir("tv-acpi-");
  afterAll(() => dir.remove());
  const write = (name: string, bytes: Uint8Array): string => {
    const p = join(dir.path, name);
    writeFileSync(p, bytes);
    return p;
  };
  const iasl = (...args: string[]) => spawnSync("iasl", args, { cwd: dir.path, encoding: "utf8" });

  it("iasl disassembles every data table with correct checksums and the fields we wrote", () => {
    for (const sig of ["FACP", "APIC", "MCFG", "XSDT", "RSDT", "FACS"]) {
      const file = write(`${sig}.dat`, tableBytes(t, sig));
      const r = iasl("-d", file);
      expect(r.status, r.stderr + r.stdout).toBe(0);
      const dsl = readFileSync(file.replace(/\.dat$/, ".dsl"), "utf8");
      expect(dsl, sig).not.toMatch(/Incorrect checksum|Error|Invalid/i);
      if (sig === "FACP") {
        expect(dsl).toMatch(/PM1A Control Block Address : 00000604/);
        expect(dsl).toMatch(/Reset Register Supported \(V2\) : 1/);
        expect(dsl).toMatch(/Address : 0000000000000CF9/);
        expect(dsl).toMatch(/Value to cause reset : 06/);
        expect(dsl).toMatch(/8042 Present on ports 60\/64 \(V2\) : 0/);
      }
      if (sig === "APIC") {
        expect(dsl.match(/Subtable Type : 00 \[Processor Local APIC\]/g)?.length).toBe(2);
        expect(dsl).toMatch(/Source : 00\s+\[04Ch 0076 {3}4\]\s+Interrupt : 00000002/);
      }
    }
  });

  it("iasl notices a corrupted checksum (the check above can fail)", () => {
    const bad = tableBytes(t, "APIC").slice();
    bad[9] ^= 0xff;
    const file = write("BAD.dat", bad);
    iasl("-d", file);
    expect(readFileSync(file.replace(/\.dat$/, ".dsl"), "utf8")).toMatch(/Incorrect checksum/);
  });

  it("the DSDT disassembles and recompiles without errors or warnings", () => {
    const file = write("DSDT.dat", tableBytes(t, "DSDT"));
    expect(iasl("-d", file).status).toBe(0);
    const dsl = readFileSync(join(dir.path, "DSDT.dsl"), "utf8");
    expect(dsl).toMatch(/Name \(\\_S5, Package \(0x04\)/);
    expect(dsl).toMatch(/EisaId \("PNP0A03"\)/);
    const r = iasl("-p", join(dir.path, "recompiled"), join(dir.path, "DSDT.dsl"));
    expect(r.status, r.stdout).toBe(0);
    expect(r.stdout).toMatch(/0 Errors, 0 Warnings/);
  });

  it("ACPICA's interpreter evaluates \\_S5, parses _CRS and _PRT", () => {
    const file = write("DSDT2.dat", tableBytes(t, "DSDT"));
    const r = spawnSync("acpiexec", [file], { input: "evaluate \\_S5\nresources \\_SB.PCI0\nquit\n", encoding: "utf8", timeout: 30_000 });
    const out = r.stdout;
    expect(out).toMatch(new RegExp(`\\[Integer\\] = 000000000000000${SLP_TYP_S5}\\s+\\[Integer\\] = 000000000000000${SLP_TYP_S5}`));
    expect(out.match(/PCI IRQ Routing Table Package/g)?.length).toBe(128);
    expect(out).toMatch(/Address : 000000000003FFFF\s+Pin : 00000000\s+Source : \[NULL NAMESTRING\]\s+Source Index : 00000013/);
    expect(out).toMatch(/Address Minimum : C0000000\s+Address Maximum : FEBFFFFF/);
    expect(out).toMatch(/EndTag Resource/);
    expect(out).not.toMatch(/AE_AML|AE_BAD|Exception/);
  });

  it("a DSDT built for other PCI windows reports them", () => {
    const other = buildAcpiTables(0xe0000, { cpus: 1, pciWindows: { io: [0x1000, 0x2000], mem: [0x80000000, 0x90000000] } });
    expect(buildDsdtAml({ io: [0x1000, 0x2000], mem: [0x80000000, 0x90000000] }).length + 36).toBe(other.tables.DSDT.length);
    const file = write("DSDT3.dat", tableBytes(other, "DSDT"));
    const r = spawnSync("acpiexec", [file], { input: "resources \\_SB.PCI0\nquit\n", encoding: "utf8", timeout: 30_000 });
    expect(r.stdout).toMatch(/Address Minimum : 80000000\s+Address Maximum : 8FFFFFFF/);
  });
});
