/*
 * slsvirt lazy restore: the guest runs before its RAM is read
 *
 * hostd answers a lazy RESTORE with the epoch's device state, a page map
 * (include/slsvirt/proto.h, struct sls_lazy_map: for every page with data,
 * which segment file holds its newest copy, where, and its crc32c) and the
 * chain's segment files as read-only fds. Device state is loaded at once;
 * large RAM blocks are registered with userfaultfd (missing mode) and a
 * fault thread serves each page when the guest -- or QEMU -- first touches
 * it: read from the segment, checked against its crc, installed. Small
 * blocks (firmware, option ROMs, ACPI tables) are loaded eagerly.
 *
 * How a page is installed depends on the block's memory:
 *  - a private mapping of a file (memory-backend-file share=off): the page
 *    is written into the file, then the fault is woken and the kernel maps
 *    the page cache page. Every VM that maps the same file -- clones of one
 *    epoch -- shares the page until it writes to it (copy on write into its
 *    own anonymous memory). A page another clone loaded already is in the
 *    page cache and never faults here.
 *  - anonymous memory: UFFDIO_COPY.
 * A page the epoch does not hold is zero: UFFDIO_ZEROPAGE, no memory.
 *
 * A page whose bytes fail their crc is never handed to the guest: the
 * faulting vCPU cannot be paused while it waits inside the fault, so QEMU
 * exits with an error that names the epoch, the segment and the page.
 *
 * A working set (the pages an earlier run touched, in order) can be loaded
 * in the background by a prefetch thread while the guest starts.
 *
 * Copyright (c) 2026 The slsvirt authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include "qemu/bitmap.h"
#include "qemu/bswap.h"
#include "qemu/crc32c.h"
#include "qemu/error-report.h"
#include "qemu/madvise.h"
#include "qemu/main-loop.h"
#include "qemu/thread.h"
#include "qemu/units.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-slsvirt.h"
#include "exec/cpu-common.h"
#include "exec/memory.h"
#include "exec/ram_addr.h"
#include "hw/misc/slsvirt.h"
#include "trace.h"

/* Blocks at least this large are served lazily; smaller ones (firmware,
 * ROMs, ACPI tables: a few hundred KiB) are read at restore. */
#define SLSVIRT_LAZY_MIN_BLOCK   (16 * MiB)
/*
 * A fault loads the pages of its aligned window of this many pages that
 * are not loaded yet (one read when they are stored side by side). Each
 * page loaded costs ~4-5 us here (read, crc, write into the image), each
 * fault a few: the service in bench/run restore waited 22 ms for 5200
 * pages in 180 faults with 32, 15-17 ms for 3000-3400 pages in 440-750
 * faults with 4 and 8 (2026-11-30).
 */
#define SLSVIRT_LAZY_CLUSTER     8

#define SLSVIRT_WS_MAGIC         0x57534c53u     /* "SLSW" */
#define SLSVIRT_WS_VERSION       1

/* Working-set file: this header, then nr_pages uint64_t staging pages in
 * the order they were first touched; crc = crc32c of the pages. */
typedef struct SlsvirtWsHeader {
    uint32_t magic;
    uint32_t version;
    uint64_t epoch;
    uint64_t nr_pages;
    uint32_t pages_crc;
    uint32_t header_crc;                        /* of the bytes before */
} QEMU_PACKED SlsvirtWsHeader;

typedef struct SlsvirtLazyBlock {
    SlsvirtRamBlock *b;
    bool lazy;                  /* served by the fault thread */
    int fd;                     /* file-backed private mapping, else -1 */
    uint64_t fd_offset;
    unsigned long *loaded;      /* pages installed by us */
    unsigned long *written;     /* pages written since the restore (the
                                 * engine's harvests); a page may be
                                 * mapped without loaded set: another VM
                                 * put it into the shared file */
} SlsvirtLazyBlock;

struct SlsvirtLazy {
    uint64_t epoch;
    bool image_shared;          /* other VMs (clones) map the RAM image */
    int uffd;
    int stop_fd;                /* eventfd: the threads exit */
    int nr_files;
    int files[SLS_LAZY_MAX_FILES];
    uint64_t file_epoch[SLS_LAZY_MAX_FILES];
    struct sls_lazy_page *map;  /* sorted by staging_page */
    uint64_t nr_map;
    unsigned nr_blocks;
    SlsvirtLazyBlock blocks[SLS_MAX_RAM_BLOCKS];
    QemuMutex lock;             /* one installer at a time (fault, prefetch) */
    QemuThread fault_thread;
    QemuThread prefetch_thread;
    bool prefetching;
    uint64_t *ws;               /* prefetch list */
    uint64_t nr_ws;
    uint64_t *order;            /* pages installed, in order (under lock) */
    uint64_t nr_order, max_order;
    int64_t started_ns;

    /* statistics (atomics or under lock) */
    uint64_t pages_loaded;
    uint64_t zero_pages;
    uint64_t faults;
    uint64_t prefetched;
    bool prefetch_done;
    uint64_t fault_ns;
    uint64_t fault_max_ns;
    uint64_t first_fault_ns;
};

/*
 * crc32c (Castagnoli) of @len bytes, as crc32c(0xffffffff, @buf, @len).
 * Every page a lazy restore serves is checked, on the path of a waiting
 * vCPU: QEMU's crc32c() is a byte-at-a-time table walk (~14 us per 4 KiB
 * page on our hosts, more than the read and the install together), the
 * SSE4.2 crc32 instruction does a page in well under a microsecond.
 */
#if defined(__x86_64__)
static bool slsvirt_crc_hw;

static void __attribute__((constructor)) slsvirt_crc_init(void)
{
    slsvirt_crc_hw = __builtin_cpu_supports("sse4.2");
}

static uint32_t __attribute__((target("sse4.2")))
slsvirt_crc32c_hw(const uint8_t *p, size_t len)
{
    uint64_t crc = 0xffffffff;

    for (; len >= 8; p += 8, len -= 8) {
        crc = __builtin_ia32_crc32di(crc, ldq_he_p(p));
    }
    for (; len; p++, len--) {
        crc = __builtin_ia32_crc32qi((uint32_t)crc, *p);
    }
    return (uint32_t)crc ^ 0xffffffff;
}
#endif

static uint32_t slsvirt_crc32c(const void *buf, size_t len)
{
#if defined(__x86_64__)
    if (slsvirt_crc_hw) {
        return slsvirt_crc32c_hw(buf, len);
    }
#endif
    return crc32c(0xffffffff, buf, len);
}

static SlsvirtLazyBlock *slsvirt_lazy_block_of(SlsvirtLazy *l,
                                               uint64_t staging_page,
                                               unsigned long *page)
{
    uint64_t off = staging_page * SLS_PAGE_SIZE;
    unsigned i;

    for (i = 0; i < l->nr_blocks; i++) {
        SlsvirtRamBlock *b = l->blocks[i].b;

        if (off >= b->staging_offset && off < b->staging_offset + b->length) {
            *page = (off - b->staging_offset) / SLS_PAGE_SIZE;
            return &l->blocks[i];
        }
    }
    return NULL;
}

static const struct sls_lazy_page *slsvirt_lazy_lookup(SlsvirtLazy *l,
                                                       uint64_t staging_page)
{
    uint64_t lo = 0, hi = l->nr_map;

    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;

        if (l->map[mid].staging_page < staging_page) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < l->nr_map && l->map[lo].staging_page == staging_page ?
           &l->map[lo] : NULL;
}

static void G_NORETURN slsvirt_lazy_fatal(SlsvirtLazy *l, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);

/*
 * The faulting thread waits inside the kernel for this page; it cannot be
 * paused, and it must not see wrong bytes. Nothing can be saved either: a
 * capture would read the same page. Stop here.
 */
static void G_NORETURN slsvirt_lazy_fatal(SlsvirtLazy *l, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    error_report("slsvirt: lazy restore of epoch %" PRIu64 ": %s; the guest "
                 "cannot continue without this page: stopping QEMU (restore "
                 "an older epoch with --epoch)", l->epoch, msg);
    /* Not exit(): another thread (vCPU, main loop) is stuck in a fault
     * on this RAM, holding locks atexit handlers may want. */
    _exit(EXIT_FAILURE);
}

/*
 * Read the stored copies of @n map entries from @e on, which lie back to
 * back in one file, into @buf (crcs are checked by the caller).
 */
static bool slsvirt_lazy_read_run(SlsvirtLazy *l, const struct sls_lazy_page *e,
                                  unsigned long n, uint8_t *buf, Error **errp)
{
    size_t len = n * SLS_PAGE_SIZE, done = 0;

    while (done < len) {
        ssize_t r = pread(l->files[e->file], buf + done, len - done,
                          e->file_offset + done);

        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            error_setg_errno(errp, r < 0 ? errno : EIO, "segment of epoch %"
                             PRIu64 ": read of offset %" PRIu64 " failed",
                             l->file_epoch[e->file], e->file_offset + done);
            return false;
        }
        done += r;
    }
    return true;
}

/* Read one page's stored copy into @buf and check its crc. */
static bool slsvirt_lazy_read(SlsvirtLazy *l, const struct sls_lazy_page *e,
                              uint8_t *buf, Error **errp)
{
    uint32_t crc;

    if (!slsvirt_lazy_read_run(l, e, 1, buf, errp)) {
        return false;
    }
    crc = slsvirt_crc32c(buf, SLS_PAGE_SIZE);
    if (crc != e->page_crc) {
        error_setg(errp, "page at staging offset 0x%" PRIx64 " (segment of "
                   "epoch %" PRIu64 ", file offset %" PRIu64 ") fails its crc "
                   "(stored 0x%08x, computed 0x%08x)",
                   e->staging_page * SLS_PAGE_SIZE, l->file_epoch[e->file],
                   e->file_offset, e->page_crc, crc);
        return false;
    }
    return true;
}

/* Zero page @page of @lb (the epoch holds no data for it). */
static void slsvirt_lazy_zero(SlsvirtLazy *l, SlsvirtLazyBlock *lb,
                              unsigned long page)
{
    uint64_t off = (uint64_t)page * SLS_PAGE_SIZE;
    struct uffdio_zeropage z = {
        .range = { .start = (uint64_t)(uintptr_t)lb->b->host + off,
                   .len = SLS_PAGE_SIZE },
    };

    if (ioctl(l->uffd, UFFDIO_ZEROPAGE, &z) && errno != EEXIST) {
        slsvirt_lazy_fatal(l, "UFFDIO_ZEROPAGE at %s+0x%" PRIx64 ": %s",
                           qemu_ram_get_idstr(lb->b->rb), off, strerror(errno));
    }
    l->zero_pages++;
}

/*
 * Install @n pages of @lb from @first, whose checked bytes are at @buf, into
 * guest RAM: through the backing file (a private mapping maps the page
 * cache page when its fault retries) or with UFFDIO_COPY.
 */
static void slsvirt_lazy_put(SlsvirtLazy *l, SlsvirtLazyBlock *lb,
                             unsigned long first, unsigned long n,
                             const uint8_t *buf)
{
    SlsvirtRamBlock *b = lb->b;
    uint64_t off = (uint64_t)first * SLS_PAGE_SIZE;
    size_t len = n * SLS_PAGE_SIZE;

    if (lb->fd >= 0) {
        if (pwrite(lb->fd, buf, len, lb->fd_offset + off) != (ssize_t)len) {
            slsvirt_lazy_fatal(l, "write of pages 0x%" PRIx64 "+%zu into the "
                               "backing file of '%s': %s", off, len,
                               qemu_ram_get_idstr(b->rb), strerror(errno));
        }
    } else {
        for (unsigned long i = 0; i < n; i++) {
            struct uffdio_copy c = {
                .dst = (uint64_t)(uintptr_t)b->host + off + i * SLS_PAGE_SIZE,
                .src = (uint64_t)(uintptr_t)buf + i * SLS_PAGE_SIZE,
                .len = SLS_PAGE_SIZE,
            };

            if (ioctl(l->uffd, UFFDIO_COPY, &c) && errno != EEXIST) {
                slsvirt_lazy_fatal(l, "UFFDIO_COPY at %s+0x%" PRIx64 ": %s",
                                   qemu_ram_get_idstr(b->rb),
                                   off + i * SLS_PAGE_SIZE, strerror(errno));
            }
        }
    }
    bitmap_set_atomic(lb->loaded, first, n);
    l->pages_loaded += n;
    for (unsigned long i = 0; i < n && l->nr_order < l->max_order; i++) {
        l->order[l->nr_order++] = b->staging_offset / SLS_PAGE_SIZE + first + i;
    }
}

/*
 * Serve page @page of @lb, and with it the not yet loaded pages of its
 * SLSVIRT_LAZY_CLUSTER-page window that the epoch holds data for: they are
 * usually stored side by side, so one read brings them all. The page
 * asked for must verify or QEMU stops; a neighbour that does not is left
 * unloaded (its own fault reports it). Called with l->lock held.
 */
static void slsvirt_lazy_install(SlsvirtLazy *l, SlsvirtLazyBlock *lb,
                                 unsigned long page, bool wake)
{
    SlsvirtRamBlock *b = lb->b;
    uint64_t base = b->staging_offset / SLS_PAGE_SIZE;
    unsigned long npages = b->length / SLS_PAGE_SIZE;
    unsigned long w0 = page & ~(unsigned long)(SLSVIRT_LAZY_CLUSTER - 1);
    unsigned long w1 = MIN(w0 + SLSVIRT_LAZY_CLUSTER, npages);
    static uint8_t buf[SLSVIRT_LAZY_CLUSTER * SLS_PAGE_SIZE]
        QEMU_ALIGNED(SLS_PAGE_SIZE);    /* under l->lock */
    unsigned long p = w0;

    if (!test_bit(page, lb->loaded) && !slsvirt_lazy_lookup(l, base + page)) {
        slsvirt_lazy_zero(l, lb, page);
        set_bit_atomic(page, lb->loaded);
        if (l->nr_order < l->max_order) {
            l->order[l->nr_order++] = base + page;
        }
    }
    while (p < w1) {
        const struct sls_lazy_page *e = test_bit(p, lb->loaded) ? NULL :
                                        slsvirt_lazy_lookup(l, base + p);
        unsigned long run = 1, i, good;
        Error *err = NULL;

        if (!e) {
            p++;
            continue;
        }
        /* A run of pages stored back to back in one file. */
        while (p + run < w1 && !test_bit(p + run, lb->loaded) &&
               e + run < l->map + l->nr_map &&
               e[run].staging_page == base + p + run &&
               e[run].file == e->file &&
               e[run].file_offset == e->file_offset + run * SLS_PAGE_SIZE) {
            run++;
        }
        if (!slsvirt_lazy_read_run(l, e, run, buf, &err)) {
            if (p <= page && page < p + run) {
                slsvirt_lazy_fatal(l, "RAM block '%s' page 0x%lx: %s",
                                   qemu_ram_get_idstr(b->rb),
                                   page * SLS_PAGE_SIZE, error_get_pretty(err));
            }
            error_free(err);
            p += run;
            continue;
        }
        /* Install the pages that verify, in runs; skip a bad neighbour. */
        for (i = 0; i < run; i = good + 1) {
            for (good = i; good < run &&
                 slsvirt_crc32c(buf + good * SLS_PAGE_SIZE,
                               SLS_PAGE_SIZE) == e[good].page_crc; good++) {
            }
            if (good > i) {
                slsvirt_lazy_put(l, lb, p + i, good - i,
                                 buf + i * SLS_PAGE_SIZE);
            }
            if (good < run && p + good == page) {
                slsvirt_lazy_fatal(l, "RAM block '%s' page 0x%lx: page at "
                                   "staging offset 0x%" PRIx64 " (segment of "
                                   "epoch %" PRIu64 ", file offset %" PRIu64
                                   ") fails its crc (stored 0x%08x, computed "
                                   "0x%08x)", qemu_ram_get_idstr(b->rb),
                                   page * SLS_PAGE_SIZE,
                                   e[good].staging_page * SLS_PAGE_SIZE,
                                   l->file_epoch[e[good].file],
                                   e[good].file_offset, e[good].page_crc,
                                   slsvirt_crc32c(buf + good * SLS_PAGE_SIZE,
                                                  SLS_PAGE_SIZE));
            }
        }
        p += run;
    }
    if (wake && lb->fd >= 0) {
        struct uffdio_range r = {
            .start = (uint64_t)(uintptr_t)b->host + (uint64_t)page *
                     SLS_PAGE_SIZE,
            .len = SLS_PAGE_SIZE,
        };

        /* The page is in the file now: the fault retries and maps it. */
        if (ioctl(l->uffd, UFFDIO_WAKE, &r) && errno != ENOENT) {
            slsvirt_lazy_fatal(l, "UFFDIO_WAKE: %s", strerror(errno));
        }
    }
}

static SlsvirtLazyBlock *slsvirt_lazy_block_at(SlsvirtLazy *l, uint64_t addr,
                                               unsigned long *page)
{
    unsigned i;

    for (i = 0; i < l->nr_blocks; i++) {
        SlsvirtLazyBlock *lb = &l->blocks[i];
        uint64_t host = (uint64_t)(uintptr_t)lb->b->host;

        if (lb->lazy && addr >= host && addr < host + lb->b->length) {
            *page = (addr - host) / SLS_PAGE_SIZE;
            return lb;
        }
    }
    return NULL;
}

static void *slsvirt_lazy_fault_thread(void *opaque)
{
    SlsvirtLazy *l = opaque;
    struct uffd_msg msgs[16];

    for (;;) {
        struct pollfd pfd[2] = {
            { .fd = l->uffd, .events = POLLIN },
            { .fd = l->stop_fd, .events = POLLIN },
        };
        ssize_t n;
        int i;

        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            slsvirt_lazy_fatal(l, "poll on userfaultfd: %s", strerror(errno));
        }
        if (pfd[1].revents) {
            return NULL;
        }
        n = read(l->uffd, msgs, sizeof(msgs));
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                continue;
            }
            slsvirt_lazy_fatal(l, "read from userfaultfd: %s", strerror(errno));
        }
        for (i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++) {
            uint64_t addr = msgs[i].arg.pagefault.address;
            int64_t t0 = get_clock();
            SlsvirtLazyBlock *lb;
            unsigned long page;
            uint64_t took;

            if (msgs[i].event != UFFD_EVENT_PAGEFAULT) {
                continue;
            }
            lb = slsvirt_lazy_block_at(l, addr, &page);
            if (!lb) {
                slsvirt_lazy_fatal(l, "fault at 0x%" PRIx64 " outside the "
                                   "registered RAM", addr);
            }
            qemu_mutex_lock(&l->lock);
            slsvirt_lazy_install(l, lb, page, true);
            took = get_clock() - t0;
            if (!l->faults++) {
                l->first_fault_ns = t0 - l->started_ns;
            }
            l->fault_ns += took;
            l->fault_max_ns = MAX(l->fault_max_ns, took);
            qemu_mutex_unlock(&l->lock);
            trace_slsvirt_lazy_fault(addr, took);
        }
    }
}

static void *slsvirt_lazy_prefetch_thread(void *opaque)
{
    SlsvirtLazy *l = opaque;
    uint64_t i;

    for (i = 0; i < l->nr_ws; i++) {
        SlsvirtLazyBlock *lb;
        unsigned long page;
        uint64_t v;

        if (eventfd_read(l->stop_fd, &v) == 0) {
            eventfd_write(l->stop_fd, v);       /* for the fault thread */
            return NULL;
        }
        lb = slsvirt_lazy_block_of(l, l->ws[i], &page);
        if (!lb || !lb->lazy || test_bit(page, lb->loaded)) {
            continue;
        }
        qemu_mutex_lock(&l->lock);
        /* No fault is waiting: nothing to wake (a fault that arrives
         * meanwhile finds the page loaded and wakes itself). */
        slsvirt_lazy_install(l, lb, page, false);
        l->prefetched++;
        qemu_mutex_unlock(&l->lock);
    }
    qatomic_set(&l->prefetch_done, true);
    return NULL;
}

/* Reads the working-set file at @path; every entry is checked later
 * against the layout (unknown pages are skipped). */
static bool slsvirt_lazy_read_ws(SlsvirtLazy *l, const char *path,
                                 Error **errp)
{
    g_autofree char *data = NULL;
    g_autoptr(GError) gerr = NULL;
    SlsvirtWsHeader h;
    gsize len;

    if (!g_file_get_contents(path, &data, &len, &gerr)) {
        error_setg(errp, "slsvirt: working set %s: %s", path, gerr->message);
        return false;
    }
    if (len < sizeof(h)) {
        error_setg(errp, "slsvirt: working set %s is truncated", path);
        return false;
    }
    memcpy(&h, data, sizeof(h));
    if (le32_to_cpu(h.magic) != SLSVIRT_WS_MAGIC ||
        le32_to_cpu(h.version) != SLSVIRT_WS_VERSION ||
        slsvirt_crc32c(&h, offsetof(SlsvirtWsHeader, header_crc)) !=
        le32_to_cpu(h.header_crc) ||
        le64_to_cpu(h.nr_pages) != (len - sizeof(h)) / sizeof(uint64_t) ||
        (len - sizeof(h)) % sizeof(uint64_t) ||
        slsvirt_crc32c(data + sizeof(h), len - sizeof(h)) !=
        le32_to_cpu(h.pages_crc)) {
        error_setg(errp, "slsvirt: %s is not a valid working-set file "
                   "(magic, version, length or crc)", path);
        return false;
    }
    l->nr_ws = le64_to_cpu(h.nr_pages);
    l->ws = g_new(uint64_t, MAX(l->nr_ws, 1));
    for (uint64_t i = 0; i < l->nr_ws; i++) {
        uint64_t v;

        memcpy(&v, data + sizeof(h) + i * sizeof(v), sizeof(v));
        l->ws[i] = le64_to_cpu(v);
    }
    return true;
}

/* Checks and copies hostd's page map out of staging. */
static bool slsvirt_lazy_read_map(SlsvirtEngine *e, SlsvirtLazy *l,
                                  uint64_t epoch, int nr_fds, Error **errp)
{
    struct sls_lazy_map h;
    const uint8_t *body = e->staging + sizeof(h);
    uint64_t body_len, i, total_pages = e->staging_size / SLS_PAGE_SIZE;

    memcpy(&h, e->staging, sizeof(h));
    if (le32_to_cpu(h.magic) != SLS_LAZY_MAP_MAGIC ||
        slsvirt_crc32c(&h, offsetof(struct sls_lazy_map, header_crc)) !=
        le32_to_cpu(h.header_crc) ||
        le64_to_cpu(h.epoch) != epoch ||
        le32_to_cpu(h.nr_files) != (uint32_t)nr_fds ||
        le64_to_cpu(h.nr_pages) > total_pages) {
        error_setg(errp, "slsvirt: hostd's page map for epoch %" PRIu64
                   " is malformed (header)", epoch);
        return false;
    }
    l->nr_map = le64_to_cpu(h.nr_pages);
    body_len = nr_fds * sizeof(uint64_t) + l->nr_map * sizeof(*l->map);
    if (sizeof(h) + body_len > e->staging_size ||
        slsvirt_crc32c(body, body_len) != le32_to_cpu(h.entries_crc)) {
        error_setg(errp, "slsvirt: hostd's page map for epoch %" PRIu64
                   " fails its crc", epoch);
        return false;
    }
    for (i = 0; i < (uint64_t)nr_fds; i++) {
        uint64_t v;

        memcpy(&v, body + i * sizeof(v), sizeof(v));
        l->file_epoch[i] = le64_to_cpu(v);
    }
    l->map = g_new(struct sls_lazy_page, MAX(l->nr_map, 1));
    memcpy(l->map, body + nr_fds * sizeof(uint64_t),
           l->nr_map * sizeof(*l->map));
    for (i = 0; i < l->nr_map; i++) {
        struct sls_lazy_page *p = &l->map[i];

        p->staging_page = le64_to_cpu(p->staging_page);
        p->file_offset = le64_to_cpu(p->file_offset);
        p->page_crc = le32_to_cpu(p->page_crc);
        p->file = le16_to_cpu(p->file);
        if (p->staging_page >= total_pages || p->file >= nr_fds ||
            p->file_offset % SLS_PAGE_SIZE ||
            (i && p->staging_page <= l->map[i - 1].staging_page)) {
            error_setg(errp, "slsvirt: hostd's page map for epoch %" PRIu64
                       ": entry %" PRIu64 " is invalid", epoch, i);
            return false;
        }
    }
    return true;
}

/* Bytes of staging the page map used (page aligned). */
uint64_t slsvirt_lazy_map_bytes(SlsvirtEngine *e)
{
    SlsvirtLazy *l = e->lazy;

    if (!l) {
        return 0;
    }
    return ROUND_UP(sizeof(struct sls_lazy_map) +
                    l->nr_files * sizeof(uint64_t) +
                    l->nr_map * sizeof(struct sls_lazy_page), SLS_PAGE_SIZE);
}

void slsvirt_lazy_free(SlsvirtEngine *e)
{
    SlsvirtLazy *l = e->lazy;
    unsigned i;

    if (!l) {
        return;
    }
    if (l->uffd >= 0) {
        eventfd_write(l->stop_fd, 1);
        if (l->prefetching) {
            qemu_thread_join(&l->prefetch_thread);
        }
        qemu_thread_join(&l->fault_thread);
        close(l->uffd);
    }
    if (l->stop_fd >= 0) {
        close(l->stop_fd);
    }
    for (i = 0; i < (unsigned)l->nr_files; i++) {
        close(l->files[i]);
    }
    for (i = 0; i < l->nr_blocks; i++) {
        g_free(l->blocks[i].loaded);
        g_free(l->blocks[i].written);
    }
    g_free(l->map);
    g_free(l->ws);
    g_free(l->order);
    qemu_mutex_destroy(&l->lock);
    g_free(l);
    e->lazy = NULL;
}

/* Small blocks: every page now, checked like the lazy ones; pages stored
 * back to back are read with one call. */
static bool slsvirt_lazy_load_block(SlsvirtLazy *l, SlsvirtLazyBlock *lb,
                                    Error **errp)
{
    SlsvirtRamBlock *b = lb->b;
    uint64_t first = b->staging_offset / SLS_PAGE_SIZE;
    uint64_t max = qemu_ram_get_max_length(b->rb);
    uint64_t n = MIN(b->length, max) / SLS_PAGE_SIZE, p, run, i;
    Error *err = NULL;

    for (p = 0; p < n; p += run) {
        const struct sls_lazy_page *e = slsvirt_lazy_lookup(l, first + p);
        uint8_t *dst = b->host + p * SLS_PAGE_SIZE;

        run = 1;
        if (!e) {
            memset(dst, 0, SLS_PAGE_SIZE);
            set_bit(p, lb->loaded);
            continue;
        }
        while (p + run < n && e + run < l->map + l->nr_map &&
               e[run].staging_page == first + p + run &&
               e[run].file == e->file &&
               e[run].file_offset == e->file_offset + run * SLS_PAGE_SIZE) {
            run++;
        }
        if (!slsvirt_lazy_read_run(l, e, run, dst, &err)) {
            i = 0;
            goto fail;
        }
        for (i = 0; i < run; i++) {
            uint32_t crc = slsvirt_crc32c(dst + i * SLS_PAGE_SIZE,
                                          SLS_PAGE_SIZE);

            if (crc != e[i].page_crc) {
                error_setg(&err, "page at staging offset 0x%" PRIx64
                           " (segment of epoch %" PRIu64 ", file offset %"
                           PRIu64 ") fails its crc (stored 0x%08x, computed "
                           "0x%08x)", e[i].staging_page * SLS_PAGE_SIZE,
                           l->file_epoch[e[i].file], e[i].file_offset,
                           e[i].page_crc, crc);
                goto fail;
            }
        }
        bitmap_set(lb->loaded, p, run);
        l->pages_loaded += run;
    }
    return true;

fail:
    error_setg(errp, "slsvirt: epoch %" PRIu64 ": RAM block '%s' page 0x%"
               PRIx64 ": %s", l->epoch, qemu_ram_get_idstr(b->rb),
               (p + i) * SLS_PAGE_SIZE, error_get_pretty(err));
    error_free(err);
    return false;
}

bool slsvirt_lazy_start(SlsvirtState *s, uint64_t epoch, const int *fds,
                        int nr_fds, const char *working_set,
                        bool image_shared, Error **errp)
{
    SlsvirtEngine *e = &s->engine;
    SlsvirtLazy *l;
    struct uffdio_api api = { .api = UFFD_API };
    unsigned i;

    slsvirt_lazy_free(e);
    l = g_new0(SlsvirtLazy, 1);
    e->lazy = l;
    qemu_mutex_init(&l->lock);
    l->epoch = epoch;
    l->image_shared = image_shared;
    l->uffd = -1;
    l->stop_fd = -1;
    l->started_ns = get_clock();
    l->nr_files = nr_fds;
    memcpy(l->files, fds, nr_fds * sizeof(int));
    if (!slsvirt_lazy_read_map(e, l, epoch, nr_fds, errp)) {
        goto fail;
    }
    if (working_set && !slsvirt_lazy_read_ws(l, working_set, errp)) {
        goto fail;
    }
    l->max_order = e->staging_size / SLS_PAGE_SIZE;
    l->order = g_new(uint64_t, l->max_order);
    l->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    l->uffd = syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (l->stop_fd < 0 || l->uffd < 0) {
        error_setg_errno(errp, errno, "slsvirt: lazy restore needs "
                         "userfaultfd (as root, or vm.unprivileged_"
                         "userfaultfd=1); restore eagerly instead");
        goto fail;
    }
    if (ioctl(l->uffd, UFFDIO_API, &api)) {
        error_setg_errno(errp, errno, "slsvirt: UFFDIO_API");
        goto fail;
    }

    l->nr_blocks = e->nr_blocks;
    for (i = 0; i < e->nr_blocks; i++) {
        SlsvirtLazyBlock *lb = &l->blocks[i];
        SlsvirtRamBlock *b = &e->blocks[i];
        struct uffdio_register reg = {
            .range = { .start = (uint64_t)(uintptr_t)b->host,
                       .len = b->length },
            .mode = UFFDIO_REGISTER_MODE_MISSING,
        };

        lb->b = b;
        lb->fd = -1;
        lb->loaded = bitmap_new(b->length / SLS_PAGE_SIZE);
        lb->written = bitmap_new(b->length / SLS_PAGE_SIZE);
        if (b->length < SLSVIRT_LAZY_MIN_BLOCK ||
            qemu_ram_get_max_length(b->rb) != b->length) {
            if (!slsvirt_lazy_load_block(l, lb, errp)) {
                goto fail;
            }
            continue;
        }
        if (qemu_ram_get_fd(b->rb) >= 0) {
            if (qemu_ram_is_shared(b->rb)) {
                error_setg(errp, "slsvirt: lazy restore cannot serve RAM "
                           "block '%s': it is a shared mapping (use "
                           "share=off, or restore eagerly)",
                           qemu_ram_get_idstr(b->rb));
                goto fail;
            }
            lb->fd = qemu_ram_get_fd(b->rb);
            lb->fd_offset = b->rb->fd_offset;
        }
        /*
         * Whatever QEMU put there before the restore (reset, ROM images)
         * goes: a private file mapping falls back to the file, anonymous
         * memory to nothing, and every first touch faults to us.
         */
        if (qemu_madvise(b->host, b->length, QEMU_MADV_DONTNEED)) {
            error_setg_errno(errp, errno, "slsvirt: discard RAM block '%s'",
                             qemu_ram_get_idstr(b->rb));
            goto fail;
        }
        if (ioctl(l->uffd, UFFDIO_REGISTER, &reg)) {
            error_setg_errno(errp, errno, "slsvirt: userfaultfd cannot "
                             "register RAM block '%s'",
                             qemu_ram_get_idstr(b->rb));
            goto fail;
        }
        lb->lazy = true;
    }
    qemu_thread_create(&l->fault_thread, "slsvirt-lazy",
                       slsvirt_lazy_fault_thread, l, QEMU_THREAD_JOINABLE);
    if (l->nr_ws) {
        l->prefetching = true;
        qemu_thread_create(&l->prefetch_thread, "slsvirt-prefetch",
                           slsvirt_lazy_prefetch_thread, l,
                           QEMU_THREAD_JOINABLE);
    } else {
        l->prefetch_done = true;
    }
    trace_slsvirt_lazy_started(epoch, l->nr_map, l->nr_files, l->nr_ws);
    return true;

fail:
    if (l->uffd >= 0) {
        close(l->uffd);
        l->uffd = -1;
    }
    slsvirt_lazy_free(e);
    return false;
}

static SlsvirtLazyBlock *slsvirt_lazy_block_of_rb(SlsvirtLazy *l,
                                                  RAMBlock *rb)
{
    for (unsigned i = 0; l && i < l->nr_blocks; i++) {
        if (l->blocks[i].lazy && l->blocks[i].b->rb == rb) {
            return &l->blocks[i];
        }
    }
    return NULL;
}

bool slsvirt_lazy_serves(SlsvirtEngine *e, RAMBlock *rb)
{
    return slsvirt_lazy_block_of_rb(e->lazy, rb) != NULL;
}

/*
 * The guest released [@off, @off + @len) of @rb (slsvirt-pci RELEASE): from
 * now on those pages read as zero, whatever the store holds for them.
 * Returns 0 when @rb is not served lazily (the caller discards it as any
 * RAM), 1 when done, -errno on failure.
 *
 * Dropping the mapping is not enough here: a later touch would fault to
 * us (and load the epoch's bytes) or, for the private file mapping, map
 * the image's page cache page. So the private copies go (MADV_DONTNEED)
 * and a zero page takes their place (UFFDIO_ZEROPAGE: no memory), and the
 * pages count as loaded and written (a capture reads them from RAM). The
 * image file is punched only when no other VM maps it (slsctl restore;
 * clones share theirs): that is what returns its memory to the host.
 */
int slsvirt_lazy_discard(SlsvirtEngine *e, RAMBlock *rb, uint64_t off,
                         uint64_t len)
{
    SlsvirtLazy *l = e->lazy;
    SlsvirtLazyBlock *lb = slsvirt_lazy_block_of_rb(l, rb);
    uint8_t *host;
    uint64_t done = 0;
    unsigned retries = 0;
    int ret = 1;

    if (!lb) {
        return 0;
    }
    if (off % SLS_PAGE_SIZE || len % SLS_PAGE_SIZE || !len ||
        off + len > lb->b->length) {
        return -EINVAL;
    }
    host = lb->b->host + off;
    qemu_mutex_lock(&l->lock);
    if (lb->fd >= 0 && !l->image_shared &&
        fallocate(lb->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  lb->fd_offset + off, len)) {
        ret = -errno;
        goto out;
    }
    if (qemu_madvise(host, len, QEMU_MADV_DONTNEED)) {
        ret = -errno;
        goto out;
    }
    while (done < len) {
        struct uffdio_zeropage z = {
            .range = { .start = (uint64_t)(uintptr_t)host + done,
                       .len = len - done },
        };

        if (!ioctl(l->uffd, UFFDIO_ZEROPAGE, &z)) {
            break;
        }
        if (errno == EAGAIN && z.zeropage > 0) {
            done += z.zeropage;                 /* partly done: go on */
            continue;
        }
        /*
         * EEXIST: a page was mapped again meanwhile (a vCPU touched it,
         * or the kernel mapped a page cache neighbour around a fault).
         * Drop it once more.
         */
        if (errno != EEXIST || ++retries > 64 ||
            qemu_madvise(host + done, SLS_PAGE_SIZE, QEMU_MADV_DONTNEED)) {
            ret = errno == EEXIST ? -EBUSY : -errno;
            goto out;
        }
    }
    bitmap_set_atomic(lb->loaded, off / SLS_PAGE_SIZE, len / SLS_PAGE_SIZE);
    bitmap_set_atomic(lb->written, off / SLS_PAGE_SIZE, len / SLS_PAGE_SIZE);
out:
    qemu_mutex_unlock(&l->lock);
    return ret;
}

/*
 * For a capture: put page @page of @b into @dst from the store if the guest
 * has not loaded it yet, so that checkpointing a lazily restored VM does
 * not pull its whole memory in. A page with no data is left alone: the
 * caller punched staging before a full capture (slsvirt_lazy_before_full),
 * so it reads as zero. Returns false if the caller must copy from RAM.
 */
bool slsvirt_lazy_copy_page(SlsvirtEngine *e, SlsvirtRamBlock *b,
                            unsigned long page, uint8_t *dst)
{
    SlsvirtLazy *l = e->lazy;
    SlsvirtLazyBlock *lb;
    const struct sls_lazy_page *m;
    Error *err = NULL;
    bool done = false;

    if (!l) {
        return false;
    }
    lb = &l->blocks[b - e->blocks];
    if (!lb->lazy) {
        return false;
    }
    qemu_mutex_lock(&l->lock);
    /* Unwritten since the restore, the page holds the epoch's bytes,
     * whether or not it is mapped (a clone may map it from the shared
     * file without a fault). */
    if (!test_bit(page, lb->loaded) && !test_bit(page, lb->written)) {
        m = slsvirt_lazy_lookup(l, b->staging_offset / SLS_PAGE_SIZE + page);
        if (m && !slsvirt_lazy_read(l, m, dst, &err)) {
            slsvirt_lazy_fatal(l, "RAM block '%s' page 0x%lx: %s",
                               qemu_ram_get_idstr(b->rb),
                               page * SLS_PAGE_SIZE, error_get_pretty(err));
        }
        done = true;
    }
    qemu_mutex_unlock(&l->lock);
    return done;
}

/* After each harvest (vCPUs paused): remember what the guest wrote. */
void slsvirt_lazy_note_dirty(SlsvirtEngine *e)
{
    SlsvirtLazy *l = e->lazy;

    for (unsigned i = 0; l && i < l->nr_blocks; i++) {
        SlsvirtLazyBlock *lb = &l->blocks[i];

        if (lb->lazy) {
            qemu_mutex_lock(&l->lock);
            bitmap_or(lb->written, lb->written, lb->b->dirty,
                      lb->b->length / SLS_PAGE_SIZE);
            qemu_mutex_unlock(&l->lock);
        }
    }
}

/* Before a full capture of a lazily restored VM: staging reads as zero
 * wherever slsvirt_lazy_copy_page() leaves a page alone. */
void slsvirt_lazy_before_full(SlsvirtEngine *e)
{
    if (e->lazy &&
        fallocate(e->staging_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  0, e->staging_size)) {
        memset(e->staging, 0, e->staging_size);
    }
}

/* ---- QMP ------------------------------------------------------------- */

SlsRestoreInfo *qmp_query_sls_restore(Error **errp)
{
    SlsvirtState *s = slsvirt_find(errp);
    SlsRestoreInfo *info;
    SlsvirtLazy *l;

    if (!s) {
        return NULL;
    }
    l = s->engine.lazy;
    info = g_new0(SlsRestoreInfo, 1);
    info->epoch = s->engine.restored_epoch;
    info->generation = s->generation;
    info->error = g_strdup("");
    if (!l) {
        return info;
    }
    qemu_mutex_lock(&l->lock);
    info->lazy = true;
    info->pages_mapped = l->nr_map;
    info->pages_loaded = l->pages_loaded;
    info->zero_pages = l->zero_pages;
    info->faults = l->faults;
    info->prefetched = l->prefetched;
    info->prefetch_done = qatomic_read(&l->prefetch_done);
    info->fault_ns = l->fault_ns;
    info->fault_max_ns = l->fault_max_ns;
    info->first_fault_ns = l->first_fault_ns;
    qemu_mutex_unlock(&l->lock);
    return info;
}

void qmp_sls_save_working_set(const char *path, Error **errp)
{
    SlsvirtState *s = slsvirt_find(errp);
    SlsvirtLazy *l;
    g_autofree uint64_t *pages = NULL;
    g_autofree char *buf = NULL;
    g_autoptr(GError) gerr = NULL;
    SlsvirtWsHeader h = {};
    uint64_t n, i;

    if (!s) {
        return;
    }
    l = s->engine.lazy;
    if (!l) {
        error_setg(errp, "no lazy restore in this VM: nothing was recorded");
        return;
    }
    qemu_mutex_lock(&l->lock);
    n = l->nr_order;
    pages = g_new(uint64_t, MAX(n, 1));
    for (i = 0; i < n; i++) {
        pages[i] = cpu_to_le64(l->order[i]);
    }
    qemu_mutex_unlock(&l->lock);
    h.magic = cpu_to_le32(SLSVIRT_WS_MAGIC);
    h.version = cpu_to_le32(SLSVIRT_WS_VERSION);
    h.epoch = cpu_to_le64(l->epoch);
    h.nr_pages = cpu_to_le64(n);
    h.pages_crc = cpu_to_le32(slsvirt_crc32c(pages, n * sizeof(uint64_t)));
    h.header_crc = cpu_to_le32(slsvirt_crc32c(&h, offsetof(SlsvirtWsHeader,
                                                        header_crc)));
    buf = g_malloc(sizeof(h) + n * sizeof(uint64_t));
    memcpy(buf, &h, sizeof(h));
    memcpy(buf + sizeof(h), pages, n * sizeof(uint64_t));
    if (!g_file_set_contents(path, buf, sizeof(h) + n * sizeof(uint64_t),
                             &gerr)) {
        error_setg(errp, "write %s: %s", path, gerr->message);
    }
}
