/*
 * slsvirt-pci: paravirtual persistence device
 *
 * The guest rings a doorbell to ask for a durable checkpoint; the checkpoint
 * engine (slsvirt-engine.c) captures the VM and hands it to hostd, and the
 * device raises MSI-X vector SLSVIRT_VEC_EPOCH when the epoch is durable or
 * has failed. Register layout: include/slsvirt/hw.h.
 *
 * Everything the guest writes is validated: a bad access is logged with
 * LOG_GUEST_ERROR, counted in SLSVIRT_REG_BAD_ACCESSES and reported through
 * SLSVIRT_REG_CMD_STATUS; it never reaches the engine.
 *
 * Memory elasticity (SLSVIRT_F_MEMORY): RELEASE/RECLAIM batches of guest-
 * physical ranges of the machine's main RAM; released pages are discarded
 * (ram_block_discard_range) and tracked in a bitmap that is part of the
 * device state, so checkpoints, restores and migration carry it.
 *
 * Copyright (c) 2026 The slsvirt authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/log.h"
#include "qemu/module.h"
#include "qemu/error-report.h"
#include "qemu/rcu.h"
#include "qemu/units.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-slsvirt.h"
#include "exec/address-spaces.h"
#include "exec/cpu-common.h"
#include "exec/memory.h"
#include "hw/boards.h"
#include "hw/pci/msix.h"
#include "hw/qdev-properties.h"
#include "migration/vmstate.h"
#include "hw/misc/slsvirt.h"
#include "trace.h"

static void slsvirt_bad_access(SlsvirtState *s, const char *what,
                               hwaddr addr, unsigned size, uint64_t val)
{
    s->bad_accesses++;
    s->cmd_status = SLSVIRT_ST_INVALID;
    qemu_log_mask(LOG_GUEST_ERROR,
                  "slsvirt: %s: offset 0x%" HWADDR_PRIx " size %u value 0x%"
                  PRIx64 "\n", what, addr, size, val);
}

/* A 64-bit register is read as one 8-byte access at @base or as 4-byte
 * halves at @base and @base + 4. */
/* A 64-bit register written as one 8-byte access or two 4-byte halves. */
static bool slsvirt_write64(hwaddr addr, unsigned size, hwaddr base,
                            uint64_t val, uint64_t *reg)
{
    if (addr == base) {
        *reg = size == 8 ? val : deposit64(*reg, 0, 32, val);
        return true;
    }
    if (addr == base + 4 && size == 4) {
        *reg = deposit64(*reg, 32, 32, val);
        return true;
    }
    return false;
}

static bool slsvirt_read64(hwaddr addr, unsigned size, hwaddr base,
                           uint64_t reg, uint64_t *val)
{
    if (addr == base) {
        *val = size == 8 ? reg : (uint32_t)reg;
        return true;
    }
    if (addr == base + 4 && size == 4) {
        *val = reg >> 32;
        return true;
    }
    return false;
}

/* ---- memory elasticity ------------------------------------------------ */

#define SLSVIRT_MEM_PAGE_BITS   12
QEMU_BUILD_BUG_ON(SLSVIRT_MEM_PAGE_SIZE != 1 << SLSVIRT_MEM_PAGE_BITS);

/* A range of the main RAM block, in pages. */
typedef struct SlsvirtMemRun {
    uint64_t first, npages;
} SlsvirtMemRun;

/*
 * The runs of main RAM that guest-physical [@gpa, @gpa + @len) maps to, as
 * the CPUs see it (address_space_memory): false unless every byte is the
 * machine's RAM backend itself -- ROM, device memory, MMIO (our own BARs
 * among them), aliases into other blocks and holes are refused. @runs may
 * be NULL (check only).
 */
static bool slsvirt_mem_translate(SlsvirtState *s, uint64_t gpa, uint64_t len,
                                  GArray *runs)
{
    RCU_READ_LOCK_GUARD();

    while (len) {
        hwaddr xlat, l = len;
        MemoryRegion *mr;

        mr = address_space_translate(&address_space_memory, gpa, &xlat, &l,
                                     true, MEMTXATTRS_UNSPECIFIED);
        if (mr != s->mem.ram || !l) {
            return false;
        }
        l = MIN(l, len);
        if (runs) {
            SlsvirtMemRun r = {
                .first = xlat >> SLSVIRT_MEM_PAGE_BITS,
                .npages = l >> SLSVIRT_MEM_PAGE_BITS,
            };

            /* Sections of RAM are page-granular; anything else is not a
             * range we can discard page-wise. */
            if ((xlat | l) & (SLSVIRT_MEM_PAGE_SIZE - 1) ||
                r.first + r.npages > s->mem.ram_pages) {
                return false;
            }
            g_array_append_val(runs, r);
        }
        gpa += l;
        len -= l;
    }
    return true;
}

static void slsvirt_mem_set_runs(SlsvirtMem *m, GArray *runs, guint upto,
                                 bool set)
{
    guint i;

    for (i = 0; i < upto; i++) {
        SlsvirtMemRun *r = &g_array_index(runs, SlsvirtMemRun, i);

        if (set) {
            bitmap_set(m->released, r->first, r->npages);
        } else {
            bitmap_clear(m->released, r->first, r->npages);
        }
    }
}

static void slsvirt_mem_refuse(SlsvirtState *s, bool release, uint32_t status,
                               uint32_t entry, const char *fmt, ...)
    G_GNUC_PRINTF(5, 6);

static void slsvirt_mem_refuse(SlsvirtState *s, bool release, uint32_t status,
                               uint32_t entry, const char *fmt, ...)
{
    g_autofree char *why = NULL;
    va_list ap;

    va_start(ap, fmt);
    why = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    s->cmd_status = status;
    s->mem.done = entry;
    trace_slsvirt_mem_refused(release ? SLSVIRT_CMD_RELEASE :
                              SLSVIRT_CMD_RECLAIM, status, entry);
    if (status == SLSVIRT_ST_BUSY) {
        /* The host's limitation, not the guest's fault. */
        warn_report_once("slsvirt: cannot release guest memory: %s", why);
        return;
    }
    s->bad_accesses++;
    qemu_log_mask(LOG_GUEST_ERROR, "slsvirt: %s refused (status %u), entry "
                  "%u: %s\n", release ? "RELEASE" : "RECLAIM", status, entry,
                  why);
}

/*
 * One RELEASE or RECLAIM doorbell. All or nothing: every entry is checked
 * (the bitmap is changed tentatively, so overlaps inside the batch count as
 * double releases) and only then is memory discarded. The descriptor array
 * is copied once, so the guest cannot change it between check and use.
 */
static void slsvirt_mem_command(SlsvirtState *s, bool release)
{
    SlsvirtMem *m = &s->mem;
    struct slsvirt_mem_desc desc[SLSVIRT_MEM_MAX_DESC];
    g_autoptr(GArray) runs = g_array_new(false, false, sizeof(SlsvirtMemRun));
    uint32_t count = m->desc_count, i;
    uint64_t addr = m->desc_addr, bytes, pages = 0, in_use;
    MemTxResult res;
    bool lazy;
    guint r;

    if (count < 1 || count > SLSVIRT_MEM_MAX_DESC) {
        slsvirt_mem_refuse(s, release, SLSVIRT_ST_INVALID, 0,
                           "descriptor count %u not in 1..%d", count,
                           SLSVIRT_MEM_MAX_DESC);
        return;
    }
    bytes = (uint64_t)count * sizeof(desc[0]);
    if (addr % SLSVIRT_MEM_DESC_ALIGN || addr + bytes < addr ||
        !slsvirt_mem_translate(s, addr, bytes, NULL)) {
        slsvirt_mem_refuse(s, release, SLSVIRT_ST_INVALID, 0,
                           "descriptor array 0x%" PRIx64 "+0x%" PRIx64
                           " is not aligned guest RAM", addr, bytes);
        return;
    }
    res = address_space_read(&address_space_memory, addr,
                             MEMTXATTRS_UNSPECIFIED, desc, bytes);
    if (res != MEMTX_OK) {
        slsvirt_mem_refuse(s, release, SLSVIRT_ST_INVALID, 0,
                           "descriptor array 0x%" PRIx64 " unreadable", addr);
        return;
    }

    in_use = m->ram_pages - m->released_pages;
    for (i = 0; i < count; i++) {
        uint64_t gpa = le64_to_cpu(desc[i].gpa);
        uint64_t len = le64_to_cpu(desc[i].len);
        guint first = runs->len;

        if (!len || (gpa | len) & (SLSVIRT_MEM_PAGE_SIZE - 1) ||
            gpa + len < gpa) {
            slsvirt_mem_refuse(s, release, SLSVIRT_ST_BAD_RANGE, i,
                               "range 0x%" PRIx64 "+0x%" PRIx64 " is empty, "
                               "unaligned or wraps", gpa, len);
            goto rollback;
        }
        if (!slsvirt_mem_translate(s, gpa, len, runs)) {
            g_array_set_size(runs, first);
            slsvirt_mem_refuse(s, release, SLSVIRT_ST_BAD_RANGE, i,
                               "range 0x%" PRIx64 "+0x%" PRIx64 " is not "
                               "all main guest RAM", gpa, len);
            goto rollback;
        }
        for (r = first; r < runs->len; r++) {
            SlsvirtMemRun *run = &g_array_index(runs, SlsvirtMemRun, r);
            uint64_t end = run->first + run->npages;
            bool clash = release ?
                find_next_bit(m->released, end, run->first) < end :
                find_next_zero_bit(m->released, end, run->first) < end;

            if (clash) {
                g_array_set_size(runs, r);
                slsvirt_mem_refuse(s, release, SLSVIRT_ST_BAD_RANGE, i,
                                   "range 0x%" PRIx64 "+0x%" PRIx64 " %s",
                                   gpa, len, release ?
                                   "is (partly) released already" :
                                   "is not (all) released");
                goto rollback;
            }
            if (release) {
                bitmap_set(m->released, run->first, run->npages);
            } else {
                bitmap_clear(m->released, run->first, run->npages);
            }
            pages += run->npages;
        }
        if (!release && in_use + pages > m->ceiling_pages) {
            slsvirt_mem_refuse(s, release, SLSVIRT_ST_OVER_CEILING, i,
                               "%" PRIu64 " pages in use would exceed the "
                               "ceiling of %" PRIu64, in_use + pages,
                               m->ceiling_pages);
            goto rollback;
        }
    }

    if (release) {
        if (ram_block_discard_is_disabled()) {
            slsvirt_mem_refuse(s, release, SLSVIRT_ST_BUSY, 0,
                               "RAM discard is disabled (e.g. by VFIO)");
            goto rollback;
        }
        /*
         * A lazily restored VM (or a clone) maps the epoch's image, shared
         * with its clones, privately: the lazy restore discards there
         * (slsvirt_lazy_discard: zero pages, the image punched only when
         * no clone maps it). Any other private file mapping would have
         * the file punched under whoever else maps it: refused.
         */
        lazy = slsvirt_lazy_serves(&s->engine, m->rb);
        if (!lazy && qemu_ram_get_fd(m->rb) >= 0 &&
            !qemu_ram_is_shared(m->rb)) {
            slsvirt_mem_refuse(s, release, SLSVIRT_ST_BUSY, 0,
                               "RAM is a private mapping of a file that no "
                               "lazy restore serves: cannot release it");
            goto rollback;
        }
        for (r = 0; r < runs->len; r++) {
            SlsvirtMemRun *run = &g_array_index(runs, SlsvirtMemRun, r);
            uint64_t off = run->first << SLSVIRT_MEM_PAGE_BITS;
            uint64_t len = run->npages << SLSVIRT_MEM_PAGE_BITS;

            /*
             * A discard writes zeros behind the dirty log's back: an open
             * copy-before-write window must get the bytes of the epoch it
             * is copying first, exactly as for any other writer.
             */
            ram_write_notify_mr(m->ram, off, len);
            if (lazy ? slsvirt_lazy_discard(&s->engine, m->rb, off, len) < 0
                     : ram_block_discard_range(m->rb, off, len) != 0) {
                slsvirt_mem_refuse(s, release, SLSVIRT_ST_BUSY, 0,
                                   "discard of 0x%" PRIx64 "+0x%" PRIx64
                                   " failed", off, len);
                /* Discarded or not, nothing counts as released; the
                 * guest gave up the contents anyway. */
                r = runs->len;
                goto rollback_all;
            }
        }
        m->released_pages += pages;
        m->releases++;
        for (r = 0; r < runs->len; r++) {
            SlsvirtMemRun *run = &g_array_index(runs, SlsvirtMemRun, r);

            slsvirt_engine_mem_released(s, m->rb, run->first, run->npages);
        }
    } else {
        /* The pages were discarded at RELEASE: they read as zero. */
        m->released_pages -= pages;
        m->reclaims++;
    }
    s->cmd_status = SLSVIRT_ST_OK;
    m->done = count;
    trace_slsvirt_mem_applied(release ? SLSVIRT_CMD_RELEASE :
                              SLSVIRT_CMD_RECLAIM, count, pages,
                              m->released_pages);
    return;

rollback:
    r = runs->len;
rollback_all:
    /* Undo exactly the runs changed so far: they were all clear (release)
     * or all set (reclaim) before, and none overlaps another. */
    slsvirt_mem_set_runs(m, runs, r, !release);
}

const unsigned long *slsvirt_mem_released_of(SlsvirtState *s, RAMBlock *rb,
                                             uint64_t *nbits)
{
    if (!s->mem.enabled || rb != s->mem.rb || !s->mem.released_pages) {
        return NULL;
    }
    *nbits = s->mem.ram_pages;
    return s->mem.released;
}

void slsvirt_mem_discard_released(SlsvirtState *s)
{
    SlsvirtMem *m = &s->mem;
    uint64_t p, end;

    if (!m->enabled || !m->released_pages) {
        return;
    }
    for (p = find_first_bit(m->released, m->ram_pages); p < m->ram_pages;
         p = find_next_bit(m->released, m->ram_pages, end)) {
        uint64_t off = p << SLSVIRT_MEM_PAGE_BITS, len;

        end = find_next_zero_bit(m->released, m->ram_pages, p);
        len = (end - p) << SLSVIRT_MEM_PAGE_BITS;
        if (ram_block_discard_is_disabled() ||
            ram_block_discard_range(m->rb, off, len)) {
            /* Still zero, as the guest expects; only RSS stays up. */
            memset(qemu_ram_get_host_addr(m->rb) + off, 0, len);
        }
    }
    trace_slsvirt_mem_restored(m->released_pages);
}

static void slsvirt_mem_notify(SlsvirtState *s)
{
    PCIDevice *pdev = PCI_DEVICE(s);

    trace_slsvirt_mem_policy(s->mem.target_pages, s->mem.ceiling_pages);
    if (msix_enabled(pdev)) {
        msix_notify(pdev, SLSVIRT_VEC_MEM);
    }
}

/* Main RAM as the guest may release it; false when this machine has none
 * we can handle (the feature is then not offered). */
static bool slsvirt_mem_init(SlsvirtState *s)
{
    MachineState *ms = MACHINE(qdev_get_machine());
    SlsvirtMem *m = &s->mem;
    uint64_t size;

    if (!ms->ram || !ms->ram->ram_block) {
        warn_report("slsvirt-pci: no main RAM block: memory elasticity off");
        return false;
    }
    size = memory_region_size(ms->ram);
    if (qemu_ram_pagesize(ms->ram->ram_block) != SLSVIRT_MEM_PAGE_SIZE ||
        size % SLSVIRT_MEM_PAGE_SIZE ||
        size / SLSVIRT_MEM_PAGE_SIZE > INT32_MAX) {
        warn_report("slsvirt-pci: main RAM is not discardable in 4 KiB "
                    "pages (huge pages?): memory elasticity off");
        return false;
    }
    m->ram = ms->ram;
    m->rb = ms->ram->ram_block;
    m->ram_pages = size / SLSVIRT_MEM_PAGE_SIZE;
    m->nbits = m->ram_pages;
    m->released = bitmap_new(m->ram_pages);
    m->ceiling_pages = m->ram_pages;
    m->enabled = true;
    return true;
}

/* The guest's view of memory starts over (reset, or a load of a state
 * that may not carry the memory subsection). */
static void slsvirt_mem_forget(SlsvirtMem *m)
{
    if (m->enabled) {
        bitmap_zero(m->released, m->ram_pages);
    }
    m->released_pages = 0;
    m->desc_addr = 0;
    m->desc_count = 0;
    m->done = 0;
    m->guest_free = 0;
    m->guest_used = 0;
}

/* ---- QMP: memory ------------------------------------------------------- */

static SlsvirtState *slsvirt_instance;

static SlsvirtState *slsvirt_mem_find(Error **errp)
{
    SlsvirtState *s = slsvirt_instance;

    if (!s) {
        error_setg(errp, "no slsvirt-pci device in this VM");
        return NULL;
    }
    if (!s->mem.enabled) {
        error_setg(errp, "slsvirt-pci: memory elasticity is off (property "
                   "'memory', or main RAM not discardable in 4 KiB pages)");
        return NULL;
    }
    return s;
}

void qmp_sls_mem_target(uint64_t size, Error **errp)
{
    SlsvirtState *s = slsvirt_mem_find(errp);

    if (s) {
        uint64_t keep = MIN(size / SLSVIRT_MEM_PAGE_SIZE, s->mem.ram_pages);

        s->mem.target_pages = s->mem.ram_pages - keep;
        slsvirt_mem_notify(s);
    }
}

void qmp_sls_mem_ceiling(uint64_t size, Error **errp)
{
    SlsvirtState *s = slsvirt_mem_find(errp);

    if (s) {
        s->mem.ceiling_pages = MIN(size / SLSVIRT_MEM_PAGE_SIZE,
                                   s->mem.ram_pages);
        slsvirt_mem_notify(s);
    }
}

/* Bytes of main RAM resident in host memory: mincore() over the block,
 * in slices so the vector stays small. Where a lazy restore serves the
 * block, released pages are mapped to the zero page (no memory, but
 * mincore() counts it): they are left out. */
static uint64_t slsvirt_mem_resident(SlsvirtState *s)
{
    SlsvirtMem *m = &s->mem;
    bool zero_mapped = slsvirt_lazy_serves(&s->engine, m->rb);
    const size_t slice = 64 * MiB;
    size_t host_page = qemu_real_host_page_size();
    g_autofree unsigned char *vec = g_malloc(slice / host_page);
    uint8_t *base = qemu_ram_get_host_addr(m->rb);
    uint64_t size = m->ram_pages * SLSVIRT_MEM_PAGE_SIZE, off, resident = 0;

    for (off = 0; off < size; off += slice) {
        size_t len = MIN(slice, size - off), i;

        if (mincore(base + off, len, vec)) {
            return UINT64_MAX;
        }
        for (i = 0; i < DIV_ROUND_UP(len, host_page); i++) {
            uint64_t page = (off + i * host_page) / SLSVIRT_MEM_PAGE_SIZE;

            if (zero_mapped && page < m->ram_pages &&
                test_bit(page, m->released)) {
                continue;
            }
            resident += (vec[i] & 1) ? host_page : 0;
        }
    }
    return resident;
}

SlsMemInfo *qmp_query_sls_mem(Error **errp)
{
    SlsvirtState *s = slsvirt_mem_find(errp);
    SlsvirtMem *m;
    SlsMemInfo *info;
    uint64_t p, ranges = 0;

    if (!s) {
        return NULL;
    }
    m = &s->mem;
    for (p = find_first_bit(m->released, m->ram_pages); p < m->ram_pages;
         p = find_next_bit(m->released, m->ram_pages,
                           find_next_zero_bit(m->released, m->ram_pages, p))) {
        ranges++;
    }
    info = g_new0(SlsMemInfo, 1);
    info->ram_size = m->ram_pages * SLSVIRT_MEM_PAGE_SIZE;
    info->released = m->released_pages * SLSVIRT_MEM_PAGE_SIZE;
    info->released_ranges = ranges;
    info->target_size = (m->ram_pages - m->target_pages) *
                        SLSVIRT_MEM_PAGE_SIZE;
    info->ceiling = m->ceiling_pages * SLSVIRT_MEM_PAGE_SIZE;
    info->resident = slsvirt_mem_resident(s);
    info->releases = m->releases;
    info->reclaims = m->reclaims;
    if (m->guest_free || m->guest_used) {
        info->has_guest_free = info->has_guest_used = true;
        info->guest_free = m->guest_free * SLSVIRT_MEM_PAGE_SIZE;
        info->guest_used = m->guest_used * SLSVIRT_MEM_PAGE_SIZE;
    }
    return info;
}

static uint64_t slsvirt_mmio_read(void *opaque, hwaddr addr, unsigned size)
{
    SlsvirtState *s = opaque;
    uint64_t val = 0;

    if (size == 4) {
        switch (addr) {
        case SLSVIRT_REG_MAGIC:
            return SLSVIRT_HW_MAGIC;
        case SLSVIRT_REG_VERSION:
            return SLSVIRT_HW_VERSION;
        case SLSVIRT_REG_FEATURES:
            return SLSVIRT_F_PERSIST | SLSVIRT_F_GENERATION |
                   (s->mem.enabled ? SLSVIRT_F_MEMORY : 0);
        case SLSVIRT_REG_STATUS:
            return slsvirt_engine_connected(s) ? SLSVIRT_STATUS_CHECKPOINTING
                                               : 0;
        case SLSVIRT_REG_CMD_STATUS:
            return s->cmd_status;
        case SLSVIRT_REG_BAD_ACCESSES:
            return s->bad_accesses;
        case SLSVIRT_REG_CMD:
            slsvirt_bad_access(s, "read of write-only register", addr, size, 0);
            return 0;
        case SLSVIRT_REG_MEM_DESC_COUNT:
            if (s->mem.enabled) {
                return s->mem.desc_count;
            }
            break;
        case SLSVIRT_REG_MEM_DONE:
            if (s->mem.enabled) {
                return s->mem.done;
            }
            break;
        }
    }
    if (s->mem.enabled &&
        (slsvirt_read64(addr, size, SLSVIRT_REG_MEM_DESC_ADDR,
                        s->mem.desc_addr, &val) ||
         slsvirt_read64(addr, size, SLSVIRT_REG_MEM_RAM_PAGES,
                        s->mem.ram_pages, &val) ||
         slsvirt_read64(addr, size, SLSVIRT_REG_MEM_RELEASED_PAGES,
                        s->mem.released_pages, &val) ||
         slsvirt_read64(addr, size, SLSVIRT_REG_MEM_TARGET_PAGES,
                        s->mem.target_pages, &val) ||
         slsvirt_read64(addr, size, SLSVIRT_REG_MEM_CEILING_PAGES,
                        s->mem.ceiling_pages, &val) ||
         slsvirt_read64(addr, size, SLSVIRT_REG_MEM_GUEST_FREE,
                        s->mem.guest_free, &val) ||
         slsvirt_read64(addr, size, SLSVIRT_REG_MEM_GUEST_USED,
                        s->mem.guest_used, &val))) {
        return val;
    }
    if (slsvirt_read64(addr, size, SLSVIRT_REG_TARGET_EPOCH,
                       s->target_epoch, &val) ||
        slsvirt_read64(addr, size, SLSVIRT_REG_DURABLE_EPOCH,
                       s->durable_epoch, &val) ||
        slsvirt_read64(addr, size, SLSVIRT_REG_FAILED_EPOCH,
                       s->failed_epoch, &val) ||
        slsvirt_read64(addr, size, SLSVIRT_REG_CURRENT_EPOCH,
                       s->engine.next_epoch, &val) ||
        slsvirt_read64(addr, size, SLSVIRT_REG_GENERATION,
                       s->generation, &val)) {
        return val;
    }
    slsvirt_bad_access(s, "read of unknown register", addr, size, 0);
    return 0;
}

static void slsvirt_mmio_write(void *opaque, hwaddr addr, uint64_t val,
                               unsigned size)
{
    SlsvirtState *s = opaque;
    Error *err = NULL;
    uint64_t epoch;

    if (s->mem.enabled) {
        /* Latched as written; checked at the doorbell. */
        if (slsvirt_write64(addr, size, SLSVIRT_REG_MEM_DESC_ADDR, val,
                            &s->mem.desc_addr)) {
            return;
        }
        if (addr == SLSVIRT_REG_MEM_DESC_COUNT && size == 4) {
            s->mem.desc_count = val;
            return;
        }
        /* The guest's claims about itself: clamped for display only. */
        if (slsvirt_write64(addr, size, SLSVIRT_REG_MEM_GUEST_FREE, val,
                            &s->mem.guest_free) ||
            slsvirt_write64(addr, size, SLSVIRT_REG_MEM_GUEST_USED, val,
                            &s->mem.guest_used)) {
            s->mem.guest_free = MIN(s->mem.guest_free, s->mem.ram_pages);
            s->mem.guest_used = MIN(s->mem.guest_used, s->mem.ram_pages);
            return;
        }
    }
    if (addr != SLSVIRT_REG_CMD || size != 4) {
        slsvirt_bad_access(s, "write to read-only or unknown register",
                           addr, size, val);
        return;
    }

    switch (val) {
    case SLSVIRT_CMD_RELEASE:
    case SLSVIRT_CMD_RECLAIM:
        if (!s->mem.enabled) {
            slsvirt_bad_access(s, "memory command without SLSVIRT_F_MEMORY",
                               addr, size, val);
            return;
        }
        slsvirt_mem_command(s, val == SLSVIRT_CMD_RELEASE);
        return;
    case SLSVIRT_CMD_PERSIST:
        epoch = slsvirt_engine_request(s, false, &err);
        if (!epoch) {
            trace_slsvirt_persist_refused(error_get_pretty(err));
            error_free(err);
            s->cmd_status = SLSVIRT_ST_NOT_CHECKPOINTING;
            return;
        }
        s->target_epoch = epoch;
        s->cmd_status = SLSVIRT_ST_OK;
        trace_slsvirt_persist(epoch);
        return;
    default:
        slsvirt_bad_access(s, "unknown command", addr, size, val);
        return;
    }
}

static const MemoryRegionOps slsvirt_mmio_ops = {
    .read = slsvirt_mmio_read,
    .write = slsvirt_mmio_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = {
        .min_access_size = 4,
        .max_access_size = 8,
        .unaligned = false,
    },
    .impl = {
        .min_access_size = 4,
        .max_access_size = 8,
    },
};

void slsvirt_epoch_notify(SlsvirtState *s)
{
    PCIDevice *pdev = PCI_DEVICE(s);

    if (msix_enabled(pdev)) {
        msix_notify(pdev, SLSVIRT_VEC_EPOCH);
    }
}

static void slsvirt_realize(PCIDevice *pdev, Error **errp)
{
    SlsvirtState *s = SLSVIRT_PCI(pdev);

    if (slsvirt_instance) {
        error_setg(errp, "slsvirt-pci: only one device per VM (it "
                   "checkpoints the whole machine)");
        return;
    }
    if (!s->vm_name || !*s->vm_name) {
        error_setg(errp, "slsvirt-pci: property 'vm' (store name) is required");
        return;
    }
    if (strlen(s->vm_name) >= SLS_NAME_LEN) {
        error_setg(errp, "slsvirt-pci: 'vm' must be shorter than %d bytes",
                   SLS_NAME_LEN);
        return;
    }
    if (s->period_ms > SLSVIRT_MAX_PERIOD_MS) {
        error_setg(errp, "slsvirt-pci: 'period-ms' must be 0 (on request "
                   "only) or at most %d", SLSVIRT_MAX_PERIOD_MS);
        return;
    }
    if (!s->socket_path || !*s->socket_path) {
        error_setg(errp, "slsvirt-pci: property 'socket' (hostd socket) "
                   "is required");
        return;
    }

    memory_region_init_io(&s->mmio, OBJECT(s), &slsvirt_mmio_ops, s,
                          "slsvirt-regs", SLSVIRT_REGS_SIZE);
    pci_register_bar(pdev, SLSVIRT_BAR_REGS, PCI_BASE_ADDRESS_SPACE_MEMORY,
                     &s->mmio);
    /* memory=off is the device as it was before SLSVIRT_F_MEMORY: one
     * vector, so device state saved by an older build still loads. */
    if (s->memory && !slsvirt_mem_init(s)) {
        s->memory = false;
    }
    if (msix_init_exclusive_bar(pdev, s->memory ? SLSVIRT_MSIX_VECTORS :
                                SLSVIRT_VEC_EPOCH + 1, SLSVIRT_BAR_MSIX,
                                errp)) {
        return;
    }
    msix_vector_use(pdev, SLSVIRT_VEC_EPOCH);
    if (s->memory) {
        msix_vector_use(pdev, SLSVIRT_VEC_MEM);
    }

    slsvirt_engine_init(s);
    slsvirt_instance = s;
}

static void slsvirt_exit(PCIDevice *pdev)
{
    SlsvirtState *s = SLSVIRT_PCI(pdev);

    slsvirt_engine_cleanup(s);
    msix_uninit_exclusive_bar(pdev);
    g_clear_pointer(&s->mem.released, g_free);
    s->mem.enabled = false;
    slsvirt_instance = NULL;
}

static void slsvirt_reset(DeviceState *dev)
{
    SlsvirtState *s = SLSVIRT_PCI(dev);

    /* Epoch numbers are the store's, not the guest's: they survive reset. */
    s->cmd_status = SLSVIRT_ST_OK;
    s->target_epoch = 0;
    /* A new guest owns all of RAM (released pages read as zero); the
     * host's target and ceiling stay. */
    slsvirt_mem_forget(&s->mem);
}

/* Saved so that a restore knows which generation it replaces. */
static bool slsvirt_generation_needed(void *opaque)
{
    SlsvirtState *s = opaque;

    return s->generation != 0;
}

static const VMStateDescription vmstate_slsvirt_generation = {
    .name = "slsvirt-pci/generation",
    .version_id = 1,
    .minimum_version_id = 1,
    .needed = slsvirt_generation_needed,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT64(generation, SlsvirtState),
        VMSTATE_END_OF_LIST()
    }
};

static int slsvirt_pre_load(void *opaque)
{
    SlsvirtState *s = opaque;

    /* A state without the memory subsection has nothing released. */
    slsvirt_mem_forget(&s->mem);
    if (s->mem.enabled) {
        s->mem.target_pages = 0;
        s->mem.ceiling_pages = s->mem.ram_pages;
    }
    return 0;
}

static bool slsvirt_mem_needed(void *opaque)
{
    SlsvirtState *s = opaque;

    return s->mem.enabled &&
           (s->mem.released_pages || s->mem.target_pages ||
            s->mem.ceiling_pages != s->mem.ram_pages);
}

static int slsvirt_mem_post_load(void *opaque, int version_id)
{
    SlsvirtState *s = opaque;
    SlsvirtMem *m = &s->mem;

    m->released_pages = bitmap_count_one(m->released, m->ram_pages);
    m->target_pages = MIN(m->target_pages, m->ram_pages);
    m->ceiling_pages = MIN(m->ceiling_pages, m->ram_pages);
    return 0;
}

/* Present only when something differs from a fresh device, so streams of
 * VMs that never used memory elasticity load into older builds. */
static const VMStateDescription vmstate_slsvirt_mem = {
    .name = "slsvirt-pci/memory",
    .version_id = 1,
    .minimum_version_id = 1,
    .needed = slsvirt_mem_needed,
    .post_load = slsvirt_mem_post_load,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT64_EQUAL(mem.ram_pages, SlsvirtState,
                             "main RAM size differs"),
        VMSTATE_UINT64(mem.target_pages, SlsvirtState),
        VMSTATE_UINT64(mem.ceiling_pages, SlsvirtState),
        VMSTATE_UINT32(mem.desc_count, SlsvirtState),
        VMSTATE_UINT64(mem.desc_addr, SlsvirtState),
        VMSTATE_UINT32(mem.done, SlsvirtState),
        VMSTATE_BITMAP(mem.released, SlsvirtState, 0, mem.nbits),
        VMSTATE_END_OF_LIST()
    }
};

static const VMStateDescription vmstate_slsvirt = {
    .name = "slsvirt-pci",
    .version_id = 1,
    .minimum_version_id = 1,
    .pre_load = slsvirt_pre_load,
    .fields = (const VMStateField[]) {
        VMSTATE_PCI_DEVICE(parent_obj, SlsvirtState),
        VMSTATE_MSIX(parent_obj, SlsvirtState),
        VMSTATE_UINT32(cmd_status, SlsvirtState),
        VMSTATE_UINT32(bad_accesses, SlsvirtState),
        VMSTATE_UINT64(target_epoch, SlsvirtState),
        VMSTATE_UINT64(durable_epoch, SlsvirtState),
        VMSTATE_UINT64(failed_epoch, SlsvirtState),
        VMSTATE_END_OF_LIST()
    },
    .subsections = (const VMStateDescription * const []) {
        &vmstate_slsvirt_generation,
        &vmstate_slsvirt_mem,
        NULL
    }
};

static const Property slsvirt_properties[] = {
    DEFINE_PROP_STRING("vm", SlsvirtState, vm_name),
    DEFINE_PROP_STRING("socket", SlsvirtState, socket_path),
    DEFINE_PROP_UINT32("period-ms", SlsvirtState, period_ms, 0),
    DEFINE_PROP_BOOL("copy-before-write", SlsvirtState, copy_before_write,
                     true),
    DEFINE_PROP_UINT32("cow-max-pages", SlsvirtState, cow_max_pages, 1024),
    DEFINE_PROP_BOOL("memory", SlsvirtState, memory, true),
};

static void slsvirt_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    PCIDeviceClass *pc = PCI_DEVICE_CLASS(klass);

    pc->realize = slsvirt_realize;
    pc->exit = slsvirt_exit;
    pc->vendor_id = SLSVIRT_PCI_VENDOR_ID;
    pc->device_id = SLSVIRT_PCI_DEVICE_ID;
    pc->revision = SLSVIRT_PCI_REVISION;
    pc->class_id = SLSVIRT_PCI_CLASS;
    dc->desc = "slsvirt paravirtual persistence device";
    dc->vmsd = &vmstate_slsvirt;
    /* One engine per VM: it snapshots the whole machine. */
    dc->hotpluggable = false;
    device_class_set_legacy_reset(dc, slsvirt_reset);
    device_class_set_props(dc, slsvirt_properties);
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
}

static const TypeInfo slsvirt_types[] = {
    {
        .name          = TYPE_SLSVIRT_PCI,
        .parent        = TYPE_PCI_DEVICE,
        .instance_size = sizeof(SlsvirtState),
        .class_init    = slsvirt_class_init,
        .interfaces    = (InterfaceInfo[]) {
            { INTERFACE_CONVENTIONAL_PCI_DEVICE },
            { }
        },
    },
};

DEFINE_TYPES(slsvirt_types)
