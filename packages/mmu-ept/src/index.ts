/**
 * `@typevisor/mmu-ept`: guest memory for typevisor. RAM in host chunks
 * allocated on first touch, an Intel-format extended page table with
 * violation handlers, guest paging (32-bit, PAE/NX), a software TLB, and
 * per-page dirty logging.
 *
 * @packageDocumentation
 */
export { HostMemory, HostMemoryError, type WasmMemory, PAGE_SIZE, PAGE_SHIFT, CHUNK_PAGES, CHUNK_PAGES_SHIFT, CHUNK_SIZE, MAX_HOST_PAGES } from "./host-memory.js";
export { Ept, EptError, EPT_READ, EPT_WRITE, EPT_EXEC, EPT_RWX, EPT_ACCESSED, EPT_DIRTY, EPT_MAX_GPN } from "./ept.js";
export { PhysicalMemory, MemoryLayoutError, NOT_RAM, type EptViolationHandler, type PhysicalMemoryOptions } from "./physical-memory.js";
export {
  Mmu,
  type FetchWindow,
  PageFaultSignal,
  PAGE_FAULT,
  TLB_SIZE,
  TLB_TABLE_LAYOUT,
  TLB_CURRENT_TAGS,
  ACCESS_READ,
  ACCESS_WRITE,
  ACCESS_EXEC,
  PF_PRESENT,
  PF_WRITE,
  PF_USER,
  PF_RSVD,
  PF_FETCH,
  CR0_WP,
  CR0_PG,
  CR4_PSE,
  CR4_PAE,
  CR4_PGE,
} from "./mmu.js";
export { PHYSICAL_MEMORY, attachPhysicalMemory, guestMemory } from "./plugin.js";
