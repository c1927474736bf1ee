import { MmioBus } from "@typevisor/hv-core";
import { describe, expect, it } from "vitest";
import { EPT_READ, EPT_RWX } from "./ept.js";
import { ACCESS_EXEC, ACCESS_READ, ACCESS_WRITE, CR0_PG, CR0_WP, CR4_PAE, CR4_PGE, CR4_PSE, Mmu, PAGE_FAULT, PF_FETCH, PF_PRESENT, PF_RSVD, PF_USER, PF_WRITE } from "./mmu.js";
import { PhysicalMemory } from "./physical-memory.js";

const PG = CR0_PG | 1;

function setup(ram = 16 << 20): { m: PhysicalMemory; mmu: Mmu } {
  const m = new PhysicalMemory({ ramSize: ram, mmio: new MmioBus() });
  return { m, mmu: new Mmu(m) };
}

function fault(fn: () => unknown, mmu: Mmu): [number, number] {
  try {
    fn();
  } catch (e) {
    if (e !== PAGE_FAULT) throw e;
    return [mmu.faultAddress >>> 0, mmu.faultCode];
  }
  throw new Error("no page fault");
}

describe("Mmu: 32-bit paging", () => {
  // Page directory at 0x1000, one page table at 0x2000.
  function paged(cr0 = PG, cr4 = 0): { m: PhysicalMemory; mmu: Mmu } {
    const s = setup();
    s.m.writeU32(0x1000 + (0x400 >>> 0) * 0, 0x2000 | 7); // PDE 0 -> PT, U/W/P
    s.m.writeU32(0x2000 + 5 * 4, 0x50000 | 7); // 0x5000 -> 0x50000 user rw
    s.m.writeU32(0x2000 + 6 * 4, 0x60000 | 1); // 0x6000 -> 0x60000 supervisor ro
    s.m.writeU32(0x2000 + 7 * 4, 0x70000 | 5); // 0x7000 -> 0x70000 user ro
    s.m.writeU32(0x1000 + 2 * 4, 0x00c00000 | 0x87); // 4 MiB page at 0x800000 -> 0xc00000
    s.m.writeU32(0x1000 + 3 * 4, 0x00c02000 | 0x87); // bit 13 set: reserved without PSE-36
    s.mmu.setPaging(cr0, 0x1000, cr4, false);
    return s;
  }

  it("translates 4 KiB pages and sets accessed/dirty bits", () => {
    const { m, mmu } = paged();
    m.writeU32(0x50123, 0x11223344);
    expect(mmu.read32(0x5123)).toBe(0x11223344);
    expect(m.readU32(0x2014) & 0x60).toBe(0x20);
    expect(m.readU32(0x1000) & 0x20).toBe(0x20);
    mmu.write16(0x5000, 0xbeef);
    expect(m.readU32(0x2014) & 0x60).toBe(0x60);
    expect(m.readU16(0x50000)).toBe(0xbeef);
  });

  it("raises #PF with the SDM error codes", () => {
    const { mmu } = paged();
    expect(fault(() => mmu.read8(0x9000), mmu)).toEqual([0x9000, 0]);
    mmu.setUser(true);
    expect(fault(() => mmu.read8(0x6000), mmu)).toEqual([0x6000, PF_PRESENT | PF_USER]);
    expect(fault(() => mmu.write8(0x7001, 1), mmu)).toEqual([0x7001, PF_PRESENT | PF_WRITE | PF_USER]);
    expect(fault(() => mmu.write8(0x9000, 1), mmu)).toEqual([0x9000, PF_WRITE | PF_USER]);
    mmu.setUser(false);
    mmu.write8(0x6000, 1); // CR0.WP=0: supervisor ignores R/W
  });

  it("honours CR0.WP for supervisor writes", () => {
    const { mmu } = paged(PG | CR0_WP);
    expect(fault(() => mmu.write32(0x6000, 1), mmu)).toEqual([0x6000, PF_PRESENT | PF_WRITE]);
  });

  it("maps 4 MiB pages only with CR4.PSE and checks their reserved bits", () => {
    const withPse = paged(PG, CR4_PSE);
    withPse.m.writeU8(0xc12345, 0x5a);
    expect(withPse.mmu.read8(0x812345)).toBe(0x5a);
    expect(fault(() => withPse.mmu.read8(0xc00000), withPse.mmu)).toEqual([0xc00000, PF_PRESENT | PF_RSVD]);
    const without = paged(PG, 0);
    // Without PSE the PDE points at a page table at 0xc00000 (zeroed: not present).
    expect(fault(() => without.mmu.read8(0x812345), without.mmu)).toEqual([0x812345, 0]);
  });

  it("splits a dword that crosses into a non-present page before reading anything", () => {
    const { mmu } = paged();
    expect(fault(() => mmu.read32(0x7ffe), mmu)).toEqual([0x8000, 0]);
    expect(fault(() => mmu.write32(0x7ffe, 0), mmu)).toEqual([0x8000, PF_WRITE]); // supervisor may write 0x7000 (WP=0)
  });

  it("flushes non-global entries on CR3 loads and keeps global ones", () => {
    const { m, mmu } = paged(PG, CR4_PGE);
    m.writeU32(0x2000 + 8 * 4, 0x80000 | 0x103); // global page 0x8000
    m.writeU8(0x50000, 1);
    m.writeU8(0x80000, 2);
    expect(mmu.read8(0x5000)).toBe(1);
    expect(mmu.read8(0x8000)).toBe(2);
    // Repoint both PTEs; stale translations remain until flushed.
    m.writeU32(0x2000 + 5 * 4, 0x51000 | 7);
    m.writeU32(0x2000 + 8 * 4, 0x81000 | 0x103);
    m.writeU8(0x51000, 3);
    m.writeU8(0x81000, 4);
    expect(mmu.read8(0x5000)).toBe(1);
    mmu.setPaging(PG, 0x1000 | 0x8, CR4_PGE, false); // new CR3 value, same table
    expect(mmu.read8(0x5000)).toBe(3);
    expect(mmu.read8(0x8000)).toBe(2); // global survives
    mmu.invlpg(0x8000);
    expect(mmu.read8(0x8000)).toBe(4);
  });

  it("INVLPG drops every cached piece of a large page", () => {
    const { m, mmu } = paged(PG, CR4_PSE);
    m.writeU8(0xc00000, 1);
    m.writeU8(0xc01000, 2);
    expect(mmu.read8(0x800000)).toBe(1);
    expect(mmu.read8(0x801000)).toBe(2);
    m.writeU32(0x1008, 0x00400000 | 0x87);
    m.writeU8(0x401000, 9);
    mmu.invlpg(0x800000);
    expect(mmu.read8(0x801000)).toBe(9);
  });

  it("INVLPG drops large-page pieces in either half of a 4 MiB page, every time they were cached again", () => {
    const { m, mmu } = paged(PG, CR4_PSE);
    m.writeU8(0xe01000, 1); // 0xA01000: the upper 2 MiB of the 4 MiB page at 0x800000
    expect(mmu.read8(0xa01000)).toBe(1);
    m.writeU32(0x1008, 0x00400000 | 0x87);
    m.writeU8(0x601000, 2);
    mmu.invlpg(0x800000); // an address in the lower half
    expect(mmu.read8(0xa01000)).toBe(2);
    m.writeU32(0x1008, 0x00c00000 | 0x87);
    mmu.invlpg(0x9ff000); // no piece cached in this half since the last scan, but one in the other
    expect(mmu.read8(0xa01000)).toBe(1);
    m.writeU32(0x1008, 0x00400000 | 0x87);
    mmu.invlpg(0xbff000);
    expect(mmu.read8(0xa01000)).toBe(2);
  });
});

describe("Mmu: PAE paging", () => {
  function pae(nxe: boolean): { m: PhysicalMemory; mmu: Mmu } {
    const s = setup();
    const { m } = s;
    m.writeU32(0x3000, 0x4001); // PDPTE 0 -> PD at 0x4000
    m.writeU32(0x4000, 0x5000 | 7); // PDE 0 -> PT at 0x5000
    m.writeU32(0x5000 + 1 * 8, 0x10000 | 7); // 0x1000 -> 0x10000 rw user
    m.writeU32(0x5000 + 2 * 8, 0x20000 | 7);
    m.writeU32(0x5000 + 2 * 8 + 4, 0x80000000); // NX
    m.writeU32(0x4000 + 1 * 8, 0x600000 | 0x87); // 2 MiB page 0x200000 -> 0x600000
    m.writeU32(0x5000 + 3 * 8, 0x30000 | 7);
    m.writeU32(0x5000 + 3 * 8 + 4, 0x10); // bit 36: above MAXPHYADDR 36 -> reserved
    s.mmu.setPaging(PG, 0x3000, CR4_PAE, nxe);
    expect(s.mmu.loadPdptes(0x3000)).toBe(true);
    return s;
  }

  it("walks PDPTE, PDE, PTE and 2 MiB pages", () => {
    const { m, mmu } = pae(true);
    m.writeU32(0x10010, 42);
    expect(mmu.read32(0x1010)).toBe(42);
    m.writeU8(0x7fffff, 0x77);
    expect(mmu.read8(0x3fffff)).toBe(0x77);
  });

  it("enforces NX on fetches only with EFER.NXE, and treats bit 63 as reserved without it", () => {
    const on = pae(true);
    expect(on.mmu.read8(0x2000)).toBe(0);
    expect(fault(() => on.mmu.fetch8(0x2000), on.mmu)).toEqual([0x2000, PF_PRESENT | PF_FETCH]);
    expect(on.mmu.translate(0x1000, ACCESS_EXEC, false)).toBe(0x10000);
    const off = pae(false);
    expect(fault(() => off.mmu.read8(0x2000), off.mmu)).toEqual([0x2000, PF_PRESENT | PF_RSVD]);
    expect(fault(() => off.mmu.read8(0x3000), off.mmu)).toEqual([0x3000, PF_PRESENT | PF_RSVD]);
  });

  it("rejects PDPTEs with reserved bits", () => {
    const { m, mmu } = pae(true);
    m.writeU32(0x3008, 0x6001 | 0x4); // bit 2 reserved in a PAE PDPTE
    expect(mmu.loadPdptes(0x3000)).toBe(false);
  });
});

describe("Mmu: EPT composition and dirty logging", () => {
  it("routes guest writes to a write-protected EPT page through the violation handler", () => {
    const { m, mmu } = setup();
    m.writeU8(0x9000, 1);
    expect(mmu.read8(0x9000)).toBe(1);
    mmu.write8(0x9000, 2); // cached writable now
    m.ept.protect(9, EPT_READ); // revokes: flushes the TLB
    let hits = 0;
    m.addViolationHandler(0x9000, 0x1000, () => {
      hits++;
      m.ept.protect(9, EPT_RWX);
      return true;
    });
    mmu.write8(0x9001, 3);
    expect(hits).toBe(1);
    expect(m.readU8(0x9001)).toBe(3);
  });

  it("makes the first write after a dirty-log reset take the slow path and log again", () => {
    const { m, mmu } = setup();
    mmu.write32(0x4000, 1);
    expect(m.dirtyPages()).toEqual([4]);
    m.fetchAndClearDirty();
    expect(mmu.read32(0x4000)).toBe(1);
    expect(m.dirtyPages()).toEqual([]);
    mmu.write32(0x4004, 2);
    expect(m.dirtyPages()).toEqual([4]);
  });

  it("sends non-RAM guest-physical accesses to the MMIO bus", () => {
    const { m, mmu } = setup(1 << 20);
    const log: string[] = [];
    m.mmio!.register("dev", 0xfee00000, 0x1000, {
      read: (o, s) => (log.push(`r${o}/${s}`), 0x12345678),
      write: (o, s, v) => void log.push(`w${o}/${s}=${v.toString(16)}`),
    });
    expect(mmu.read32(0xfee00020) >>> 0).toBe(0x12345678);
    mmu.write32(0xfee000b0, 0);
    mmu.write8(0xfee00010, 0xab);
    expect(log).toEqual(["r32/4", "w176/4=0", "w16/1=ab"]);
    expect(mmu.lastMmioAddress).toBe(0xfee00010);
  });

  it("keeps the fault address an int32 above 2 GiB (the field stays a small integer)", () => {
    const { mmu } = setup();
    mmu.setPaging(PG, 0x1000, 0, false); // an empty page directory: every access faults
    expect(fault(() => mmu.read32(0xc0001234), mmu)).toEqual([0xc0001234, 0]);
    expect(mmu.faultAddress).toBe(0xc0001234 | 0);
  });

  it("reads guest page tables through the EPT (page-table pages are guest-physical)", () => {
    const { m, mmu } = setup();
    m.writeU32(0x1000, 0x2000 | 3);
    m.writeU32(0x2000, 0x3000 | 3);
    m.writeU8(0x3000, 0x42);
    mmu.setPaging(PG, 0x1000, 0, false);
    m.ept.protect(2, 0); // the page table itself becomes inaccessible to the guest
    let seen = -1;
    m.addViolationHandler(0x2000, 0x1000, (gpa) => {
      seen = gpa;
      m.ept.protect(2, EPT_RWX);
      return true;
    });
    expect(mmu.read8(0)).toBe(0x42);
    expect(seen).toBe(0x2000);
    expect(mmu.translate(0, ACCESS_READ, false)).toBe(0x3000);
    expect(mmu.translate(0, ACCESS_WRITE, false)).toBe(0x3000);
  });
});

describe("Mmu: A20 gate", () => {
  it("wraps physical bit 20 while the gate is disabled and flushes on changes", () => {
    const { m, mmu } = setup();
    m.writeU8(0x000010, 0x11);
    m.writeU8(0x100010, 0x22);
    expect(mmu.read8(0x100010)).toBe(0x22);
    mmu.setA20(false);
    expect(mmu.read8(0x100010)).toBe(0x11); // FFFF:0020 wraps to 0x10 like an 8086
    mmu.write8(0x100011, 0x33);
    expect(m.readU8(0x000011)).toBe(0x33);
    mmu.setA20(true);
    expect(mmu.read8(0x100010)).toBe(0x22);
  });
});
