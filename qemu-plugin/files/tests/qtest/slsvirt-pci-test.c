/*
 * QTest for the slsvirt-pci device: registers, hostile accesses, doorbell
 * storms, the checkpoint handshake against a minimal in-test hostd, and
 * memory elasticity (RELEASE/RECLAIM of guest RAM ranges).
 *
 * Copyright (c) 2026 The slsvirt authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include "libqtest.h"
#include "qemu/atomic.h"
#include "qemu/crc32c.h"
#include "qemu/cutils.h"
#include "hw/pci/pci_regs.h"
#include "qobject/qdict.h"
#include "libqos/pci.h"
#include "libqos/pci-pc.h"
#include "slsvirt/hw.h"
#include "slsvirt/proto.h"

#define SLS_DEVFN QPCI_DEVFN(0x4, 0x0)

typedef struct Fixture {
    QTestState *qts;
    QPCIBus *bus;
    QPCIDevice *dev;
    QPCIBar bar;
} Fixture;

static void fixture_start_args(Fixture *f, const char *socket_path,
                               const char *extra)
{
    /* cow-max-pages: the copy-before-write test cuts 32 MiB deltas */
    f->qts = qtest_initf("-nodefaults -device slsvirt-pci,addr=04.0,vm=qtest,"
                         "cow-max-pages=65536,socket=%s%s", socket_path,
                         extra);
    f->bus = qpci_new_pc(f->qts, NULL);
    f->dev = qpci_device_find(f->bus, SLS_DEVFN);
    g_assert(f->dev);
    qpci_device_enable(f->dev);
    f->bar = qpci_iomap(f->dev, SLSVIRT_BAR_REGS, NULL);
}

static void fixture_start(Fixture *f, const char *socket_path)
{
    fixture_start_args(f, socket_path, "");
}

static void fixture_stop(Fixture *f)
{
    g_free(f->dev);
    qpci_free_pc(f->bus);
    qtest_quit(f->qts);
}

static uint32_t rd32(Fixture *f, uint64_t off)
{
    return qpci_io_readl(f->dev, f->bar, off);
}

static uint64_t rd64(Fixture *f, uint64_t off)
{
    return qpci_io_readq(f->dev, f->bar, off);
}

static void doorbell(Fixture *f, uint32_t cmd)
{
    qpci_io_writel(f->dev, f->bar, SLSVIRT_REG_CMD, cmd);
}

static void test_identity(void)
{
    Fixture f;

    fixture_start(&f, "/nonexistent/slsvirtd.sock");
    g_assert_cmphex(qpci_config_readw(f.dev, PCI_VENDOR_ID), ==,
                    SLSVIRT_PCI_VENDOR_ID);
    g_assert_cmphex(qpci_config_readw(f.dev, PCI_DEVICE_ID), ==,
                    SLSVIRT_PCI_DEVICE_ID);
    g_assert_cmphex(rd32(&f, SLSVIRT_REG_MAGIC), ==, SLSVIRT_HW_MAGIC);
    g_assert_cmpuint(rd32(&f, SLSVIRT_REG_VERSION), ==, SLSVIRT_HW_VERSION);
    g_assert_cmphex(rd32(&f, SLSVIRT_REG_FEATURES), ==,
                    SLSVIRT_F_PERSIST | SLSVIRT_F_MEMORY |
                    SLSVIRT_F_GENERATION);
    g_assert_cmpuint(rd32(&f, SLSVIRT_REG_STATUS), ==, 0);
    /* Generation 0 until the VM is restored or cloned. */
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_GENERATION), ==, 0);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_DURABLE_EPOCH), ==, 0);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_CURRENT_EPOCH), ==, 1);
    g_assert_cmpuint(rd32(&f, SLSVIRT_REG_BAD_ACCESSES), ==, 0);
    fixture_stop(&f);
}

/* Without a store a persist is refused at once, never queued. */
static void test_persist_without_host(void)
{
    Fixture f;

    fixture_start(&f, "/nonexistent/slsvirtd.sock");
    doorbell(&f, SLSVIRT_CMD_PERSIST);
    g_assert_cmpuint(rd32(&f, SLSVIRT_REG_CMD_STATUS), ==,
                     SLSVIRT_ST_NOT_CHECKPOINTING);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_TARGET_EPOCH), ==, 0);
    fixture_stop(&f);
}

static void test_hostile_accesses(void)
{
    static const uint64_t ro_regs[] = {
        SLSVIRT_REG_MAGIC, SLSVIRT_REG_VERSION, SLSVIRT_REG_STATUS,
        SLSVIRT_REG_CMD_STATUS, SLSVIRT_REG_TARGET_EPOCH,
        SLSVIRT_REG_DURABLE_EPOCH, SLSVIRT_REG_FAILED_EPOCH,
        SLSVIRT_REG_CURRENT_EPOCH, SLSVIRT_REG_GENERATION, 0x800,
        SLSVIRT_REGS_SIZE - 4,
    };
    static const uint32_t bad_cmds[] = { 0, 4, 0x80000000u, 0xffffffffu };
    uint32_t bad = 0;
    Fixture f;
    size_t i;

    fixture_start(&f, "/nonexistent/slsvirtd.sock");
    for (i = 0; i < G_N_ELEMENTS(ro_regs); i++) {
        qpci_io_writel(f.dev, f.bar, ro_regs[i], 0xdeadbeef);
        g_assert_cmpuint(rd32(&f, SLSVIRT_REG_CMD_STATUS), ==,
                         SLSVIRT_ST_INVALID);
        g_assert_cmpuint(rd32(&f, SLSVIRT_REG_BAD_ACCESSES), ==, ++bad);
    }
    g_assert_cmphex(rd32(&f, SLSVIRT_REG_MAGIC), ==, SLSVIRT_HW_MAGIC);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_DURABLE_EPOCH), ==, 0);

    for (i = 0; i < G_N_ELEMENTS(bad_cmds); i++) {
        doorbell(&f, bad_cmds[i]);
        g_assert_cmpuint(rd32(&f, SLSVIRT_REG_CMD_STATUS), ==,
                         SLSVIRT_ST_INVALID);
        g_assert_cmpuint(rd32(&f, SLSVIRT_REG_BAD_ACCESSES), ==, ++bad);
    }

    /* Unknown offsets read as zero and are counted. */
    g_assert_cmpuint(rd32(&f, 0x7fc), ==, 0);
    g_assert_cmpuint(rd32(&f, SLSVIRT_REG_BAD_ACCESSES), ==, ++bad);
    /* The write-only doorbell is not readable. */
    g_assert_cmpuint(rd32(&f, SLSVIRT_REG_CMD), ==, 0);
    g_assert_cmpuint(rd32(&f, SLSVIRT_REG_BAD_ACCESSES), ==, ++bad);
    /* A 64-bit write to the doorbell is not a doorbell. */
    qpci_io_writeq(f.dev, f.bar, SLSVIRT_REG_CMD, SLSVIRT_CMD_PERSIST);
    g_assert_cmpuint(rd32(&f, SLSVIRT_REG_BAD_ACCESSES), ==, ++bad);
    /* Byte and word accesses are outside .valid: the memory core drops
     * them before the device sees them. The device must be unharmed. */
    qpci_io_writeb(f.dev, f.bar, SLSVIRT_REG_CMD, SLSVIRT_CMD_PERSIST);
    qpci_io_writew(f.dev, f.bar, SLSVIRT_REG_CMD + 2, 0xffff);
    (void)qpci_io_readb(f.dev, f.bar, SLSVIRT_REG_MAGIC + 1);
    g_assert_cmphex(rd32(&f, SLSVIRT_REG_MAGIC), ==, SLSVIRT_HW_MAGIC);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_TARGET_EPOCH), ==, 0);
    fixture_stop(&f);
}

/* ---- a minimal hostd speaking include/slsvirt/proto.h ---------------- */

typedef struct FakeHost {
    char *dir;
    char *path;
    int listen_fd;
    GThread *thread;
    int fail_epoch;             /* ack this epoch with -EIO */
    int ack_delay_ms;           /* a slow store: sleep before each ack */
    int epochs_seen;            /* EPOCH messages received */
    uint64_t last_epoch;
    bool hello_ok;
    GMutex lock;                /* protects the last epoch's shape below */
    uint64_t last_flags;
    GArray *last_pages;         /* uint64_t staging page indices */
    uint8_t *staging;           /* the memfd passed with HELLO, mapped */
    uint64_t staging_size;
    /* Staging pages [watch_lo, watch_hi) of the last epoch that listed
     * them (or was FULL), by the value all their bytes have (-1: mixed). */
    uint64_t watch_lo, watch_hi;
    uint64_t watch_epoch;
    GHashTable *watch_values;   /* value -> page count */
} FakeHost;

/* Count the watched pages of an epoch by content, as hostd would read
 * them from staging before acking. Called with h->lock held. */
static void fake_host_watch(FakeHost *h, const struct sls_msg_epoch *ep,
                            const uint64_t *pages)
{
    uint64_t p, i;

    if (!h->staging || h->watch_hi <= h->watch_lo) {
        return;
    }
    g_hash_table_remove_all(h->watch_values);
    for (p = h->watch_lo; p < h->watch_hi; p++) {
        const uint8_t *pg = h->staging + p * SLS_PAGE_SIZE;
        int v = pg[0];
        bool listed = ep->flags & SLS_EPOCH_F_FULL;
        gpointer k, old;

        for (i = 0; !listed && i < ep->nr_pages; i++) {
            listed = pages[i] == p;
        }
        if (!listed) {
            continue;
        }
        for (i = 1; i < SLS_PAGE_SIZE; i++) {
            if (pg[i] != pg[0]) {
                v = -1;
                break;
            }
        }
        k = GINT_TO_POINTER(v + 1);
        old = g_hash_table_lookup(h->watch_values, k);
        g_hash_table_insert(h->watch_values, k,
                            GSIZE_TO_POINTER(GPOINTER_TO_SIZE(old) + 1));
    }
    h->watch_epoch = ep->epoch;
}

static uint64_t fake_host_watched(FakeHost *h, int value)
{
    uint64_t n;

    g_mutex_lock(&h->lock);
    n = GPOINTER_TO_SIZE(g_hash_table_lookup(h->watch_values,
                                             GINT_TO_POINTER(value + 1)));
    g_mutex_unlock(&h->lock);
    return n;
}

/* The message header, with the fd that may come with its first byte. */
static bool read_hdr(int fd, struct sls_msg_hdr *hdr, int *passed_fd)
{
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = { .iov_base = hdr, .iov_len = sizeof(*hdr) };
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1,
        .msg_control = control.buf, .msg_controllen = sizeof(control.buf),
    };
    struct cmsghdr *cmsg;
    ssize_t n = recvmsg(fd, &msg, MSG_WAITALL);

    if (n != sizeof(*hdr)) {
        return false;
    }
    for (cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
            memcpy(passed_fd, CMSG_DATA(cmsg), sizeof(int));
        }
    }
    return true;
}

static bool read_full(int fd, void *buf, size_t len)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = read(fd, (char *)buf + done, len - done);

        if (n <= 0) {
            return false;
        }
        done += n;
    }
    return true;
}

static void send_msg(int fd, uint16_t type, const void *payload, uint32_t len)
{
    struct sls_msg_hdr hdr = {
        .magic = SLS_PROTO_MAGIC, .version = SLS_PROTO_VERSION,
        .type = type, .length = len,
        .payload_crc = crc32c(0xffffffff, payload, len),
    };

    g_assert(write(fd, &hdr, sizeof(hdr)) == sizeof(hdr));
    g_assert(write(fd, payload, len) == len);
}

static gpointer fake_host_run(gpointer opaque)
{
    FakeHost *h = opaque;
    int fd = accept(h->listen_fd, NULL, NULL);
    int staging_fd = -1;
    struct sls_msg_hdr hdr;

    g_assert(fd >= 0);
    while (read_hdr(fd, &hdr, &staging_fd)) {
        g_autofree uint8_t *payload = g_malloc(hdr.length + 1);

        g_assert_cmphex(hdr.magic, ==, SLS_PROTO_MAGIC);
        g_assert(hdr.length <= SLS_PROTO_MAX_PAYLOAD);
        if (!read_full(fd, payload, hdr.length)) {
            break;
        }
        g_assert_cmphex(crc32c(0xffffffff, payload, hdr.length), ==,
                        hdr.payload_crc);
        if (hdr.type == SLS_MSG_HELLO) {
            const struct sls_msg_hello *hello = (void *)payload;
            struct sls_msg_hello_ack ack = { .version = SLS_PROTO_VERSION };

            g_assert_cmpstr(hello->vm_name, ==, "qtest");
            g_assert_cmpuint(hello->nr_blocks, >=, 1);
            g_assert_cmpuint(hdr.length, ==, sizeof(*hello) +
                             hello->nr_blocks * sizeof(struct sls_ram_block));
            g_assert(staging_fd >= 0);
            h->staging_size = hello->staging_size;
            h->staging = mmap(NULL, h->staging_size, PROT_READ, MAP_SHARED,
                              staging_fd, 0);
            g_assert(h->staging != MAP_FAILED);
            close(staging_fd);
            staging_fd = -1;
            qatomic_set(&h->hello_ok, true);
            send_msg(fd, SLS_MSG_HELLO_ACK, &ack, sizeof(ack));
        } else if (hdr.type == SLS_MSG_EPOCH) {
            const struct sls_msg_epoch *ep = (void *)payload;
            struct sls_msg_epoch_ack ack = { .epoch = ep->epoch };

            const uint64_t *pages = (const void *)((const uint8_t *)(ep + 1) +
                                                   ep->devstate_len);
            uint32_t i;

            g_assert_cmpuint(hdr.length, ==, sizeof(*ep) + ep->devstate_len +
                             ep->nr_pages * sizeof(uint64_t));
            g_assert_cmpuint(ep->epoch, >, h->last_epoch);
            /* The first epoch of a connection is full; a full epoch lists
             * no pages; a delta lists them strictly ascending. */
            g_assert(h->last_epoch || (ep->flags & SLS_EPOCH_F_FULL));
            g_assert(!(ep->flags & SLS_EPOCH_F_FULL) || !ep->nr_pages);
            for (i = 1; i < ep->nr_pages; i++) {
                g_assert_cmpuint(pages[i - 1], <, pages[i]);
            }
            g_mutex_lock(&h->lock);
            h->last_flags = ep->flags;
            g_array_set_size(h->last_pages, 0);
            g_array_append_vals(h->last_pages, pages, ep->nr_pages);
            fake_host_watch(h, ep, pages);
            g_mutex_unlock(&h->lock);
            h->last_epoch = ep->epoch;
            if (ep->epoch == h->fail_epoch) {
                ack.status = -EIO;
                pstrcpy(ack.message, sizeof(ack.message), "injected");
            }
            qatomic_inc(&h->epochs_seen);
            if (h->ack_delay_ms) {
                g_usleep(h->ack_delay_ms * 1000);
            }
            send_msg(fd, SLS_MSG_EPOCH_ACK, &ack, sizeof(ack));
        } else {
            g_assert_not_reached();
        }
    }
    close(fd);
    if (h->staging) {
        munmap(h->staging, h->staging_size);
    }
    return NULL;
}

static void fake_host_start(FakeHost *h, int fail_epoch)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };

    memset(h, 0, sizeof(*h));
    h->fail_epoch = fail_epoch;
    g_mutex_init(&h->lock);
    h->last_pages = g_array_new(false, false, sizeof(uint64_t));
    h->watch_values = g_hash_table_new(NULL, NULL);
    h->dir = g_dir_make_tmp("slsvirt-qtest-XXXXXX", NULL);
    h->path = g_strdup_printf("%s/hostd.sock", h->dir);
    h->listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
    pstrcpy(addr.sun_path, sizeof(addr.sun_path), h->path);
    g_assert(bind(h->listen_fd, (struct sockaddr *)&addr, sizeof(addr)) == 0);
    g_assert(listen(h->listen_fd, 1) == 0);
    h->thread = g_thread_new("fake-hostd", fake_host_run, h);
}

static void fake_host_stop(FakeHost *h)
{
    g_thread_join(h->thread);
    close(h->listen_fd);
    unlink(h->path);
    rmdir(h->dir);
    g_array_free(h->last_pages, true);
    g_hash_table_destroy(h->watch_values);
    g_mutex_clear(&h->lock);
    g_free(h->path);
    g_free(h->dir);
}

/* Spin on a register while the QEMU main loop delivers hostd's acks. */
static uint64_t wait_epoch(Fixture *f, uint64_t reg, uint64_t want)
{
    gint64 deadline = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
    uint64_t v;

    while ((v = rd64(f, reg)) < want) {
        g_assert(g_get_monotonic_time() < deadline);
        g_usleep(1000);
    }
    return v;
}

static void test_persist_roundtrip(void)
{
    FakeHost h;
    Fixture f;
    uint64_t target;

    fake_host_start(&h, 0);
    fixture_start(&f, h.path);
    g_assert(qatomic_read(&h.hello_ok));
    g_assert_cmpuint(rd32(&f, SLSVIRT_REG_STATUS), ==,
                     SLSVIRT_STATUS_CHECKPOINTING);

    doorbell(&f, SLSVIRT_CMD_PERSIST);
    g_assert_cmpuint(rd32(&f, SLSVIRT_REG_CMD_STATUS), ==, SLSVIRT_ST_OK);
    target = rd64(&f, SLSVIRT_REG_TARGET_EPOCH);
    g_assert_cmpuint(target, ==, 1);
    g_assert_cmpuint(wait_epoch(&f, SLSVIRT_REG_DURABLE_EPOCH, target), ==, 1);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_FAILED_EPOCH), ==, 0);

    doorbell(&f, SLSVIRT_CMD_PERSIST);
    target = rd64(&f, SLSVIRT_REG_TARGET_EPOCH);
    g_assert_cmpuint(target, ==, 2);
    wait_epoch(&f, SLSVIRT_REG_DURABLE_EPOCH, target);
    fixture_stop(&f);
    fake_host_stop(&h);
    g_assert_cmpint(h.epochs_seen, ==, 2);
}

/* After the first (full) epoch, an epoch carries exactly the pages written
 * since the one before: the engine is its own dirty-tracking client. */
static void test_delta_epochs(void)
{
    const uint64_t addr = 0x123000;     /* in pc.ram, the first block */
    FakeHost h;
    Fixture f;
    bool found = false;
    guint i, n;

    fake_host_start(&h, 0);
    fixture_start(&f, h.path);
    doorbell(&f, SLSVIRT_CMD_PERSIST);
    wait_epoch(&f, SLSVIRT_REG_DURABLE_EPOCH, rd64(&f, SLSVIRT_REG_TARGET_EPOCH));
    g_mutex_lock(&h.lock);
    g_assert(h.last_flags & SLS_EPOCH_F_FULL);
    g_mutex_unlock(&h.lock);

    qtest_writeb(f.qts, addr, 0x5a);
    qtest_writeb(f.qts, addr + 0x1000 + 17, 0xa5);
    doorbell(&f, SLSVIRT_CMD_PERSIST);
    wait_epoch(&f, SLSVIRT_REG_DURABLE_EPOCH, rd64(&f, SLSVIRT_REG_TARGET_EPOCH));
    g_mutex_lock(&h.lock);
    g_assert(!(h.last_flags & SLS_EPOCH_F_FULL));
    n = h.last_pages->len;
    for (i = 0; i + 1 < n; i++) {
        if (g_array_index(h.last_pages, uint64_t, i) == addr / 4096 &&
            g_array_index(h.last_pages, uint64_t, i + 1) == addr / 4096 + 1) {
            found = true;
        }
    }
    g_mutex_unlock(&h.lock);
    g_assert(found);
    /* Nothing else runs in a qtest machine: the delta is small. */
    g_assert_cmpuint(n, <=, 8);

    /* Nothing written since: the next delta is (nearly) empty. */
    doorbell(&f, SLSVIRT_CMD_PERSIST);
    wait_epoch(&f, SLSVIRT_REG_DURABLE_EPOCH, rd64(&f, SLSVIRT_REG_TARGET_EPOCH));
    g_mutex_lock(&h.lock);
    g_assert(!(h.last_flags & SLS_EPOCH_F_FULL));
    g_assert_cmpuint(h.last_pages->len, <=, 6);
    g_mutex_unlock(&h.lock);
    fixture_stop(&f);
    fake_host_stop(&h);
}

static bool last_pages_has(FakeHost *h, uint64_t page)
{
    bool found = false;
    guint i;

    g_mutex_lock(&h->lock);
    for (i = 0; i < h->last_pages->len; i++) {
        found |= g_array_index(h->last_pages, uint64_t, i) == page;
    }
    g_mutex_unlock(&h->lock);
    return found;
}

/*
 * A page written with the bytes it already had in the store (here: zero
 * over zero, and a byte changed and changed back before the cut) is dirty
 * but not sent; a page that changed is; and once a changed page is in the
 * store, writing its new bytes again is not sent either.
 */
static void test_unchanged_pages(void)
{
    const uint64_t same = 0x300000, back = 0x301000, changed = 0x302000;
    g_autoptr(QDict) rsp = NULL;
    QDict *ret;
    FakeHost h;
    Fixture f;

    fake_host_start(&h, 0);
    fixture_start(&f, h.path);
    /* The FULL epoch copies every page, whatever staging held. */
    qtest_writeb(f.qts, 0x303005, 0xe7);
    doorbell(&f, SLSVIRT_CMD_PERSIST);
    wait_epoch(&f, SLSVIRT_REG_DURABLE_EPOCH, rd64(&f, SLSVIRT_REG_TARGET_EPOCH));
    g_mutex_lock(&h.lock);
    g_assert(h.last_flags & SLS_EPOCH_F_FULL);
    g_assert_cmpuint(h.staging[0x303005], ==, 0xe7);  /* pc.ram at 0 */
    g_mutex_unlock(&h.lock);
    g_assert_cmpuint(qtest_readb(f.qts, same), ==, 0);
    g_assert_cmpuint(qtest_readb(f.qts, back + 9), ==, 0);

    qtest_writeb(f.qts, same, 0);
    qtest_writeb(f.qts, back + 9, 0x77);
    qtest_writeb(f.qts, back + 9, 0);
    qtest_writeb(f.qts, changed + 100, 0x3c);
    doorbell(&f, SLSVIRT_CMD_PERSIST);
    wait_epoch(&f, SLSVIRT_REG_DURABLE_EPOCH, rd64(&f, SLSVIRT_REG_TARGET_EPOCH));
    g_assert(!last_pages_has(&h, same / 4096));
    g_assert(!last_pages_has(&h, back / 4096));
    g_assert(last_pages_has(&h, changed / 4096));

    qtest_writeb(f.qts, changed + 100, 0x3c);
    doorbell(&f, SLSVIRT_CMD_PERSIST);
    wait_epoch(&f, SLSVIRT_REG_DURABLE_EPOCH, rd64(&f, SLSVIRT_REG_TARGET_EPOCH));
    g_assert(!last_pages_has(&h, changed / 4096));

    rsp = qtest_qmp(f.qts, "{'execute': 'query-sls'}");
    ret = qdict_get_qdict(rsp, "return");
    g_assert(ret);
    g_assert_cmpuint(qdict_get_int(ret, "unchanged-pages"), >=, 3);
    fixture_stop(&f);
    fake_host_stop(&h);
}

/*
 * A fake host that watches @npages pages from @addr and a device attached
 * to it, with a first durable epoch behind it: the start of both
 * copy-window tests.
 */
static void cow_start(FakeHost *h, Fixture *f, uint64_t addr, uint64_t npages)
{
    fake_host_start(h, 0);
    h->watch_lo = addr / SLS_PAGE_SIZE;
    h->watch_hi = h->watch_lo + npages;
    fixture_start(f, h->path);
    doorbell(f, SLSVIRT_CMD_PERSIST);
    wait_epoch(f, SLSVIRT_REG_DURABLE_EPOCH, rd64(f, SLSVIRT_REG_TARGET_EPOCH));
}

/*
 * One copy-window case: @arm runs before the cut (may be NULL), @act
 * right after it, so that it lands while the epoch's pages are being
 * copied; the cut epoch must then hold @fill on every watched page and
 * @check_next judges the epoch after it; @undo (may be NULL) ends an
 * attempt.
 */
typedef struct CowCase {
    uint8_t fill;
    void (*arm)(Fixture *f, uint64_t addr, uint64_t len);
    void (*act)(Fixture *f, uint64_t addr, uint64_t len);
    void (*check_next)(FakeHost *h, uint64_t npages);
    void (*undo)(Fixture *f, uint64_t addr, uint64_t len);
} CowCase;

/*
 * Runs @c over 32 MiB. The act has to land inside the copy window for
 * this to test anything: query-sls's cow-writer-copies says whether it
 * did, so retry (up to 10 times) until it has. No attempt may redo a
 * window (cow-retries).
 */
static void run_in_copy_window(const CowCase *c)
{
    const uint64_t addr = 0x1000000, len = 32 * 1024 * 1024;
    const uint64_t npages = len / SLS_PAGE_SIZE;
    uint64_t writer_copies = 0;
    FakeHost h;
    Fixture f;
    int attempt;

    cow_start(&h, &f, addr, npages);

    for (attempt = 0; attempt < 10 && !writer_copies; attempt++) {
        QDict *rsp, *ret;
        uint64_t e;

        qtest_memset(f.qts, addr, c->fill, len);
        if (c->arm) {
            c->arm(&f, addr, len);
        }
        doorbell(&f, SLSVIRT_CMD_PERSIST);
        e = rd64(&f, SLSVIRT_REG_TARGET_EPOCH);
        c->act(&f, addr, len);
        wait_epoch(&f, SLSVIRT_REG_DURABLE_EPOCH, e);
        g_assert_cmpuint(h.watch_epoch, ==, e);
        g_assert_cmpuint(fake_host_watched(&h, c->fill), ==, npages);

        doorbell(&f, SLSVIRT_CMD_PERSIST);
        e = rd64(&f, SLSVIRT_REG_TARGET_EPOCH);
        wait_epoch(&f, SLSVIRT_REG_DURABLE_EPOCH, e);
        g_assert_cmpuint(h.watch_epoch, ==, e);
        c->check_next(&h, npages);

        rsp = qtest_qmp(f.qts, "{'execute': 'query-sls'}");
        ret = qdict_get_qdict(rsp, "return");
        g_assert(ret);
        g_assert(qdict_get_bool(ret, "copy-before-write"));
        g_assert_cmpuint(qdict_get_int(ret, "cow-retries"), ==, 0);
        writer_copies = qdict_get_int(ret, "cow-writer-copies");
        qobject_unref(rsp);
        if (c->undo) {
            c->undo(&f, addr, len);
        }
    }
    g_assert_cmpuint(writer_copies, >, 0);
    g_assert_cmpuint(rd32(&f, SLSVIRT_REG_BAD_ACCESSES), ==, 0);
    fixture_stop(&f);
    fake_host_stop(&h);
}

static void cbw_overwrite(Fixture *f, uint64_t addr, uint64_t len)
{
    qtest_memset(f->qts, addr, 0xb2, len);
}

static void cbw_check_next(FakeHost *h, uint64_t npages)
{
    g_assert_cmpuint(fake_host_watched(h, 0xb2), ==, npages);
}

/*
 * Copy-before-write: the epoch's pages are copied into staging after the
 * machine resumes, so a write that lands while they are being copied must
 * not reach the epoch. Fill 32 MiB with 0xa1, cut an epoch, overwrite it
 * with 0xb2 at once (qtest writes are DMA-like: address_space_write), and
 * check hostd saw only 0xa1 in that epoch and only 0xb2 in the next.
 */
static void test_copy_before_write(void)
{
    static const CowCase c = {
        .fill = 0xa1,
        .act = cbw_overwrite,
        .check_next = cbw_check_next,
    };

    run_in_copy_window(&c);
}

/* While the store is busy with one epoch, a storm of doorbells is
 * coalesced into the next: it costs a handful of epochs, not one per
 * doorbell, and every request is covered by a durable epoch at least as
 * new. (The in-test store takes 20 ms per ack, like a slow disk, so the
 * storm always outruns it.) */
static void test_doorbell_storm(void)
{
    FakeHost h;
    Fixture f;
    uint64_t target = 0, t;
    int i;

    fake_host_start(&h, 0);
    h.ack_delay_ms = 20;
    fixture_start(&f, h.path);
    for (i = 0; i < 2000; i++) {
        doorbell(&f, SLSVIRT_CMD_PERSIST);
        g_assert_cmpuint(rd32(&f, SLSVIRT_REG_CMD_STATUS), ==, SLSVIRT_ST_OK);
        t = rd64(&f, SLSVIRT_REG_TARGET_EPOCH);
        g_assert_cmpuint(t, >=, target);
        target = t;
    }
    wait_epoch(&f, SLSVIRT_REG_DURABLE_EPOCH, target);
    fixture_stop(&f);
    fake_host_stop(&h);
    g_assert_cmpint(h.epochs_seen, <, 2000 / 4);
    g_assert_cmpint(h.epochs_seen, ==, target);
}

/* hostd failing an epoch reaches the guest as FAILED_EPOCH; the next
 * epoch still commits. */
static void test_failed_epoch(void)
{
    FakeHost h;
    Fixture f;

    fake_host_start(&h, 1);
    fixture_start(&f, h.path);
    doorbell(&f, SLSVIRT_CMD_PERSIST);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_TARGET_EPOCH), ==, 1);
    wait_epoch(&f, SLSVIRT_REG_FAILED_EPOCH, 1);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_DURABLE_EPOCH), ==, 0);
    doorbell(&f, SLSVIRT_CMD_PERSIST);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_TARGET_EPOCH), ==, 2);
    wait_epoch(&f, SLSVIRT_REG_DURABLE_EPOCH, 2);
    fixture_stop(&f);
    fake_host_stop(&h);
}


/* ---- memory elasticity ------------------------------------------------- */

#define MEM_PAGE        SLSVIRT_MEM_PAGE_SIZE
#define QTEST_RAM       (128 * 1024 * 1024)     /* the pc machine's default */
#define DESC_AT         0x3000000               /* descriptor array, in RAM */

typedef struct MemRange {
    uint64_t gpa, len;
} MemRange;

/* Write a batch's descriptors at @at, ring @cmd, return CMD_STATUS. */
static uint32_t mem_batch_at(Fixture *f, uint32_t cmd, uint64_t at,
                             const MemRange *r, uint32_t n)
{
    uint32_t i;

    for (i = 0; i < n; i++) {
        qtest_writeq(f->qts, at + i * 16, r[i].gpa);
        qtest_writeq(f->qts, at + i * 16 + 8, r[i].len);
    }
    qpci_io_writeq(f->dev, f->bar, SLSVIRT_REG_MEM_DESC_ADDR, at);
    qpci_io_writel(f->dev, f->bar, SLSVIRT_REG_MEM_DESC_COUNT, n);
    doorbell(f, cmd);
    return rd32(f, SLSVIRT_REG_CMD_STATUS);
}

static uint32_t mem_batch(Fixture *f, uint32_t cmd, const MemRange *r,
                          uint32_t n)
{
    return mem_batch_at(f, cmd, DESC_AT, r, n);
}

static uint32_t mem_one(Fixture *f, uint32_t cmd, uint64_t gpa, uint64_t len)
{
    MemRange r = { gpa, len };

    return mem_batch(f, cmd, &r, 1);
}

static bool all_bytes(Fixture *f, uint64_t addr, uint64_t len, uint8_t v)
{
    g_autofree uint8_t *buf = g_malloc(len);
    uint64_t i;

    qtest_memread(f->qts, addr, buf, len);
    for (i = 0; i < len; i++) {
        if (buf[i] != v) {
            return false;
        }
    }
    return true;
}

static QDict *qmp_ok(Fixture *f, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static QDict *qmp_ok(Fixture *f, const char *fmt, ...)
{
    va_list ap;
    QDict *rsp;

    va_start(ap, fmt);
    rsp = qtest_vqmp(f->qts, fmt, ap);
    va_end(ap);
    g_assert(qdict_haskey(rsp, "return"));
    return rsp;
}

static int64_t query_mem(Fixture *f, const char *key)
{
    QDict *rsp = qmp_ok(f, "{'execute': 'query-sls-mem'}");
    int64_t v = qdict_get_int(qdict_get_qdict(rsp, "return"), key);

    qobject_unref(rsp);
    return v;
}

/* Release written memory, read it back as zero, reclaim it. */
static void test_mem_release_reclaim(void)
{
    const uint64_t addr = 0x2000000, len = 256 * 1024;
    const MemRange two[] = {
        { addr, MEM_PAGE }, { addr + 2 * MEM_PAGE, 2 * MEM_PAGE },
    };
    Fixture f;

    fixture_start(&f, "/nonexistent/slsvirtd.sock");
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_MEM_RAM_PAGES), ==,
                     QTEST_RAM / MEM_PAGE);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_MEM_CEILING_PAGES), ==,
                     QTEST_RAM / MEM_PAGE);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_MEM_RELEASED_PAGES), ==, 0);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_MEM_TARGET_PAGES), ==, 0);

    qtest_memset(f.qts, addr, 0x5c, len);
    g_assert(all_bytes(&f, addr, len, 0x5c));
    g_assert_cmpuint(mem_one(&f, SLSVIRT_CMD_RELEASE, addr, len), ==,
                     SLSVIRT_ST_OK);
    g_assert_cmpuint(rd32(&f, SLSVIRT_REG_MEM_DONE), ==, 1);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_MEM_RELEASED_PAGES), ==,
                     len / MEM_PAGE);
    /* Discarded at once: anonymous RAM reads back as zero. */
    g_assert(all_bytes(&f, addr, len, 0));
    g_assert_cmpuint(query_mem(&f, "released"), ==, len);
    g_assert_cmpuint(query_mem(&f, "released-ranges"), ==, 1);
    g_assert_cmpuint(query_mem(&f, "resident"), <=,
                     QTEST_RAM - len);

    g_assert_cmpuint(mem_one(&f, SLSVIRT_CMD_RECLAIM, addr, len), ==,
                     SLSVIRT_ST_OK);
    g_assert_cmpuint(rd32(&f, SLSVIRT_REG_MEM_DONE), ==, 1);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_MEM_RELEASED_PAGES), ==, 0);
    g_assert(all_bytes(&f, addr, len, 0));

    /* Two ranges, one doorbell. */
    qtest_memset(f.qts, addr, 0x77, 4 * MEM_PAGE);
    g_assert_cmpuint(mem_batch(&f, SLSVIRT_CMD_RELEASE, two, 2), ==,
                     SLSVIRT_ST_OK);
    g_assert_cmpuint(rd32(&f, SLSVIRT_REG_MEM_DONE), ==, 2);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_MEM_RELEASED_PAGES), ==, 3);
    g_assert_cmpuint(query_mem(&f, "released-ranges"), ==, 2);
    g_assert(all_bytes(&f, addr + MEM_PAGE, MEM_PAGE, 0x77));
    g_assert_cmpuint(mem_batch(&f, SLSVIRT_CMD_RECLAIM, two, 2), ==,
                     SLSVIRT_ST_OK);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_MEM_RELEASED_PAGES), ==, 0);
    g_assert_cmpuint(query_mem(&f, "releases"), ==, 2);
    g_assert_cmpuint(query_mem(&f, "reclaims"), ==, 2);
    g_assert_cmpuint(rd32(&f, SLSVIRT_REG_BAD_ACCESSES), ==, 0);
    fixture_stop(&f);
}

/*
 * The guest's own account of its memory: shown by query-sls-mem once
 * written (8-byte or two 4-byte halves), clamped to the RAM size.
 */
static void test_mem_guest_stats(void)
{
    const uint64_t ram_pages = QTEST_RAM / MEM_PAGE;
    QDict *rsp;
    Fixture f;

    fixture_start(&f, "/nonexistent/slsvirtd.sock");
    rsp = qmp_ok(&f, "{'execute': 'query-sls-mem'}");
    g_assert(!qdict_haskey(qdict_get_qdict(rsp, "return"), "guest-free"));
    qobject_unref(rsp);

    qpci_io_writeq(f.dev, f.bar, SLSVIRT_REG_MEM_GUEST_FREE, 1000);
    qpci_io_writel(f.dev, f.bar, SLSVIRT_REG_MEM_GUEST_USED, 2000);
    qpci_io_writel(f.dev, f.bar, SLSVIRT_REG_MEM_GUEST_USED + 4, 0);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_MEM_GUEST_FREE), ==, 1000);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_MEM_GUEST_USED), ==, 2000);
    g_assert_cmpuint(query_mem(&f, "guest-free"), ==, 1000 * MEM_PAGE);
    g_assert_cmpuint(query_mem(&f, "guest-used"), ==, 2000 * MEM_PAGE);

    /* A lying guest gets its claim clamped, not trusted. */
    qpci_io_writeq(f.dev, f.bar, SLSVIRT_REG_MEM_GUEST_FREE, UINT64_MAX);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_MEM_GUEST_FREE), ==, ram_pages);
    g_assert_cmpuint(rd32(&f, SLSVIRT_REG_BAD_ACCESSES), ==, 0);
    fixture_stop(&f);
}

/* A refused batch: the status, the bad entry's index, one more bad access,
 * and nothing applied. */
static void expect_refused(Fixture *f, uint32_t status, uint32_t want,
                           uint32_t entry, uint32_t *bad, uint64_t released)
{
    g_assert_cmpuint(status, ==, want);
    g_assert_cmpuint(rd32(f, SLSVIRT_REG_MEM_DONE), ==, entry);
    g_assert_cmpuint(rd32(f, SLSVIRT_REG_BAD_ACCESSES), ==, ++*bad);
    g_assert_cmpuint(rd64(f, SLSVIRT_REG_MEM_RELEASED_PAGES), ==, released);
}

static void test_mem_hostile(void)
{
    const uint64_t a = 0x2000000, b = 0x2100000, c = 0x2200000;
    const uint64_t ram_end = QTEST_RAM;
    const MemRange a_then_b[] = { { b, MEM_PAGE }, { a, MEM_PAGE } };
    const MemRange twice[] = {
        { c, 2 * MEM_PAGE }, { c + MEM_PAGE, MEM_PAGE },
    };
    struct {
        uint64_t gpa, len;
    } bad_ranges[] = {
        { a + 1, MEM_PAGE },                    /* unaligned gpa */
        { b, 100 },                             /* unaligned len */
        { b, 0 },                               /* empty */
        { 0xfffffffffffff000ull, 0x2000 },      /* wraps */
        { 0, 1ull << 63 },                      /* far beyond RAM */
        { 0xfffc0000, MEM_PAGE },               /* BIOS ROM */
        { 0xc0000, MEM_PAGE },                  /* legacy ROM window */
        { ram_end, MEM_PAGE },                  /* beyond RAM: PCI hole */
        { ram_end - MEM_PAGE, 2 * MEM_PAGE },   /* straddles the end */
        { 0, 0 },                               /* BAR0, set below */
    };
    uint32_t bad = 0;
    uint64_t released;
    Fixture f;
    size_t i;

    fixture_start(&f, "/nonexistent/slsvirtd.sock");
    bad_ranges[G_N_ELEMENTS(bad_ranges) - 1].gpa = f.bar.addr;
    bad_ranges[G_N_ELEMENTS(bad_ranges) - 1].len = MEM_PAGE;
    g_assert(!f.bar.is_io && f.bar.addr);

    g_assert_cmpuint(mem_one(&f, SLSVIRT_CMD_RELEASE, a, MEM_PAGE), ==,
                     SLSVIRT_ST_OK);
    released = 1;

    /* double release, alone and after a good entry: nothing applied */
    expect_refused(&f, mem_one(&f, SLSVIRT_CMD_RELEASE, a, MEM_PAGE),
                   SLSVIRT_ST_BAD_RANGE, 0, &bad, released);
    expect_refused(&f, mem_batch(&f, SLSVIRT_CMD_RELEASE, a_then_b, 2),
                   SLSVIRT_ST_BAD_RANGE, 1, &bad, released);
    /* overlapping entries of one batch are a double release too */
    expect_refused(&f, mem_batch(&f, SLSVIRT_CMD_RELEASE, twice, 2),
                   SLSVIRT_ST_BAD_RANGE, 1, &bad, released);
    /* reclaim of never-released and of partly released ranges */
    expect_refused(&f, mem_one(&f, SLSVIRT_CMD_RECLAIM, b, MEM_PAGE),
                   SLSVIRT_ST_BAD_RANGE, 0, &bad, released);
    expect_refused(&f, mem_one(&f, SLSVIRT_CMD_RECLAIM, a, 2 * MEM_PAGE),
                   SLSVIRT_ST_BAD_RANGE, 0, &bad, released);

    for (i = 0; i < G_N_ELEMENTS(bad_ranges); i++) {
        MemRange r[2] = { { b, MEM_PAGE },
                          { bad_ranges[i].gpa, bad_ranges[i].len } };

        expect_refused(&f, mem_batch(&f, SLSVIRT_CMD_RELEASE, r, 2),
                       SLSVIRT_ST_BAD_RANGE, 1, &bad, released);
        expect_refused(&f, mem_batch(&f, SLSVIRT_CMD_RECLAIM, r + 1, 1),
                       SLSVIRT_ST_BAD_RANGE, 0, &bad, released);
    }

    /* the descriptor array itself: count, alignment, location */
    qpci_io_writeq(f.dev, f.bar, SLSVIRT_REG_MEM_DESC_ADDR, DESC_AT);
    qpci_io_writel(f.dev, f.bar, SLSVIRT_REG_MEM_DESC_COUNT, 0);
    doorbell(&f, SLSVIRT_CMD_RELEASE);
    expect_refused(&f, rd32(&f, SLSVIRT_REG_CMD_STATUS), SLSVIRT_ST_INVALID,
                   0, &bad, released);
    qpci_io_writel(f.dev, f.bar, SLSVIRT_REG_MEM_DESC_COUNT,
                   SLSVIRT_MEM_MAX_DESC + 1);
    doorbell(&f, SLSVIRT_CMD_RECLAIM);
    expect_refused(&f, rd32(&f, SLSVIRT_REG_CMD_STATUS), SLSVIRT_ST_INVALID,
                   0, &bad, released);
    {
        const MemRange ok = { b, MEM_PAGE };
        const uint64_t bad_desc[] = {
            DESC_AT + 8,                        /* not 16-byte aligned */
            0xfffc0000,                         /* in the BIOS ROM */
            f.bar.addr,                         /* our own registers */
            ram_end - 16,                       /* second entry past RAM */
            0xfffffffffffffff0ull,              /* wraps */
        };

        for (i = 0; i < G_N_ELEMENTS(bad_desc); i++) {
            MemRange two[2] = { ok, ok };

            if (i == 3) {
                /* the first entry in RAM, the second beyond it */
                qtest_writeq(f.qts, bad_desc[i], b);
                qtest_writeq(f.qts, bad_desc[i] + 8, MEM_PAGE);
                qpci_io_writeq(f.dev, f.bar, SLSVIRT_REG_MEM_DESC_ADDR,
                               bad_desc[i]);
                qpci_io_writel(f.dev, f.bar, SLSVIRT_REG_MEM_DESC_COUNT, 2);
                doorbell(&f, SLSVIRT_CMD_RELEASE);
            } else if (i == 0) {
                mem_batch_at(&f, SLSVIRT_CMD_RELEASE, bad_desc[i], two, 2);
            } else {
                qpci_io_writeq(f.dev, f.bar, SLSVIRT_REG_MEM_DESC_ADDR,
                               bad_desc[i]);
                qpci_io_writel(f.dev, f.bar, SLSVIRT_REG_MEM_DESC_COUNT, 2);
                doorbell(&f, SLSVIRT_CMD_RELEASE);
            }
            expect_refused(&f, rd32(&f, SLSVIRT_REG_CMD_STATUS),
                           SLSVIRT_ST_INVALID, 0, &bad, released);
        }
    }
    /* the registers still work: a good batch after all that */
    g_assert_cmpuint(mem_one(&f, SLSVIRT_CMD_RECLAIM, a, MEM_PAGE), ==,
                     SLSVIRT_ST_OK);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_MEM_RELEASED_PAGES), ==, 0);
    g_assert_cmpuint(rd32(&f, SLSVIRT_REG_BAD_ACCESSES), ==, bad);
    fixture_stop(&f);
}

/* A reclaim that would put more pages in use than the ceiling fails,
 * as a whole; up to the ceiling it works. */
static void test_mem_ceiling(void)
{
    const uint64_t a = 0x2000000, ram_pages = QTEST_RAM / MEM_PAGE;
    const MemRange split[] = { { a, 4 * MEM_PAGE }, { a + 4 * MEM_PAGE,
                                                     8 * MEM_PAGE } };
    uint32_t bad = 0;
    QDict *rsp;
    Fixture f;

    fixture_start(&f, "/nonexistent/slsvirtd.sock");
    g_assert_cmpuint(mem_one(&f, SLSVIRT_CMD_RELEASE, a, 16 * MEM_PAGE), ==,
                     SLSVIRT_ST_OK);
    rsp = qmp_ok(&f, "{'execute': 'sls-mem-ceiling', 'arguments': "
                 "{'size': %" PRIu64 "}}", (ram_pages - 8) * MEM_PAGE);
    qobject_unref(rsp);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_MEM_CEILING_PAGES), ==,
                     ram_pages - 8);
    g_assert_cmpuint(query_mem(&f, "ceiling"), ==, (ram_pages - 8) * MEM_PAGE);

    expect_refused(&f, mem_one(&f, SLSVIRT_CMD_RECLAIM, a, 16 * MEM_PAGE),
                   SLSVIRT_ST_OVER_CEILING, 0, &bad, 16);
    /* 4 + 8 > 8: the second entry crosses it, the first is not applied */
    expect_refused(&f, mem_batch(&f, SLSVIRT_CMD_RECLAIM, split, 2),
                   SLSVIRT_ST_OVER_CEILING, 1, &bad, 16);
    g_assert_cmpuint(mem_one(&f, SLSVIRT_CMD_RECLAIM, a, 8 * MEM_PAGE), ==,
                     SLSVIRT_ST_OK);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_MEM_RELEASED_PAGES), ==, 8);
    expect_refused(&f, mem_one(&f, SLSVIRT_CMD_RECLAIM, a + 8 * MEM_PAGE,
                               MEM_PAGE),
                   SLSVIRT_ST_OVER_CEILING, 0, &bad, 8);
    /* releasing is always allowed */
    g_assert_cmpuint(mem_one(&f, SLSVIRT_CMD_RELEASE, a, MEM_PAGE), ==,
                     SLSVIRT_ST_OK);
    fixture_stop(&f);
}

/* sls-mem-target sets the target register and raises the memory vector
 * (masked here, so it shows up as pending); the epoch vector stays quiet. */
static void test_mem_target_vector(void)
{
    const uint64_t ram_pages = QTEST_RAM / MEM_PAGE;
    QDict *rsp;
    Fixture f;

    fixture_start(&f, "/nonexistent/slsvirtd.sock");
    qpci_msix_enable(f.dev);
    g_assert_cmpuint(qpci_msix_table_size(f.dev), ==, SLSVIRT_MSIX_VECTORS);
    g_assert(!qpci_msix_pending(f.dev, SLSVIRT_VEC_MEM));

    rsp = qmp_ok(&f, "{'execute': 'sls-mem-target', 'arguments': "
                 "{'size': %d}}", 64 * 1024 * 1024);
    qobject_unref(rsp);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_MEM_TARGET_PAGES), ==,
                     ram_pages - 64 * 1024 * 1024 / MEM_PAGE);
    g_assert(qpci_msix_pending(f.dev, SLSVIRT_VEC_MEM));
    g_assert(!qpci_msix_pending(f.dev, SLSVIRT_VEC_EPOCH));
    g_assert_cmpuint(query_mem(&f, "target-size"), ==, 64 * 1024 * 1024);

    /* more than RAM: nothing to release; a non-multiple rounds down */
    rsp = qmp_ok(&f, "{'execute': 'sls-mem-target', 'arguments': "
                 "{'size': %" PRIu64 "}}", (uint64_t)QTEST_RAM * 4);
    qobject_unref(rsp);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_MEM_TARGET_PAGES), ==, 0);
    rsp = qmp_ok(&f, "{'execute': 'sls-mem-target', 'arguments': "
                 "{'size': %d}}", 1000);
    qobject_unref(rsp);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_MEM_TARGET_PAGES), ==, ram_pages);
    qpci_msix_disable(f.dev);
    fixture_stop(&f);
}

/* memory=off is the device without SLSVIRT_F_MEMORY: one vector, the
 * commands and registers are invalid, the QMP commands fail. */
static void test_mem_off(void)
{
    QDict *rsp;
    Fixture f;

    fixture_start_args(&f, "/nonexistent/slsvirtd.sock", ",memory=off");
    g_assert_cmphex(rd32(&f, SLSVIRT_REG_FEATURES), ==, SLSVIRT_F_PERSIST |
                    SLSVIRT_F_GENERATION);
    doorbell(&f, SLSVIRT_CMD_RELEASE);
    g_assert_cmpuint(rd32(&f, SLSVIRT_REG_CMD_STATUS), ==, SLSVIRT_ST_INVALID);
    g_assert_cmpuint(rd32(&f, SLSVIRT_REG_BAD_ACCESSES), ==, 1);
    g_assert_cmpuint(rd64(&f, SLSVIRT_REG_MEM_RAM_PAGES), ==, 0);
    g_assert_cmpuint(rd32(&f, SLSVIRT_REG_BAD_ACCESSES), ==, 2);
    rsp = qtest_qmp(f.qts, "{'execute': 'sls-mem-target', 'arguments': "
                    "{'size': 4096}}");
    g_assert(qdict_haskey(rsp, "error"));
    qobject_unref(rsp);
    qpci_msix_enable(f.dev);
    g_assert_cmpuint(qpci_msix_table_size(f.dev), ==, 1);
    qpci_msix_disable(f.dev);
    fixture_stop(&f);
}

/* Wait until the machine reaches run state @want (QMP query-status). */
static void wait_status(Fixture *f, const char *want)
{
    gint64 deadline = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;

    for (;;) {
        QDict *rsp = qmp_ok(f, "{'execute': 'query-status'}");
        bool done = !strcmp(qdict_get_str(qdict_get_qdict(rsp, "return"),
                                          "status"), want);

        qobject_unref(rsp);
        if (done) {
            return;
        }
        g_assert(g_get_monotonic_time() < deadline);
        g_usleep(10 * 1000);
    }
}

/*
 * The released bitmap, target and ceiling are device state: saved with the
 * VM (here: a stock migration to a file, the same device state a checkpoint
 * carries) and loaded into a new process, they come back as they were, and
 * the released range reads as zero there.
 */
static void test_mem_state_roundtrip(void)
{
    const uint64_t a = 0x2000000, b = 0x2400000;
    const MemRange two[] = { { a, 16 * MEM_PAGE }, { b, 4 * MEM_PAGE } };
    g_autofree char *dir = g_dir_make_tmp("slsvirt-qtest-XXXXXX", NULL);
    g_autofree char *file = g_strdup_printf("%s/vm.state", dir);
    g_autofree char *uri = g_strdup_printf("file:%s", file);
    g_autofree char *extra = g_strdup(" -incoming defer");
    Fixture f, g;

    fixture_start(&f, "/nonexistent/slsvirtd.sock");
    qtest_memset(f.qts, a, 0x3e, 16 * MEM_PAGE);
    qtest_memset(f.qts, a + 16 * MEM_PAGE, 0x4f, MEM_PAGE);
    g_assert_cmpuint(mem_batch(&f, SLSVIRT_CMD_RELEASE, two, 2), ==,
                     SLSVIRT_ST_OK);
    qobject_unref(qmp_ok(&f, "{'execute': 'sls-mem-target', 'arguments': "
                         "{'size': %d}}", 96 * 1024 * 1024));
    qobject_unref(qmp_ok(&f, "{'execute': 'sls-mem-ceiling', 'arguments': "
                         "{'size': %d}}", 120 * 1024 * 1024));
    qobject_unref(qmp_ok(&f, "{'execute': 'stop'}"));
    qobject_unref(qmp_ok(&f, "{'execute': 'migrate', 'arguments': "
                         "{'uri': %s}}", uri));
    wait_status(&f, "postmigrate");
    fixture_stop(&f);

    fixture_start_args(&g, "/nonexistent/slsvirtd.sock", extra);
    qobject_unref(qmp_ok(&g, "{'execute': 'migrate-incoming', 'arguments': "
                         "{'uri': %s}}", uri));
    wait_status(&g, "paused");
    g_assert_cmpuint(rd64(&g, SLSVIRT_REG_MEM_RELEASED_PAGES), ==, 20);
    g_assert_cmpuint(rd64(&g, SLSVIRT_REG_MEM_TARGET_PAGES), ==,
                     (QTEST_RAM - 96 * 1024 * 1024) / MEM_PAGE);
    g_assert_cmpuint(rd64(&g, SLSVIRT_REG_MEM_CEILING_PAGES), ==,
                     120 * 1024 * 1024 / MEM_PAGE);
    g_assert_cmpuint(query_mem(&g, "released-ranges"), ==, 2);
    g_assert(all_bytes(&g, a, 16 * MEM_PAGE, 0));
    g_assert(all_bytes(&g, a + 16 * MEM_PAGE, MEM_PAGE, 0x4f));
    /* the same pages: released already, reclaimable within the ceiling */
    g_assert_cmpuint(mem_one(&g, SLSVIRT_CMD_RELEASE, b, MEM_PAGE), ==,
                     SLSVIRT_ST_BAD_RANGE);
    g_assert_cmpuint(mem_batch(&g, SLSVIRT_CMD_RECLAIM, two, 2), ==,
                     SLSVIRT_ST_OVER_CEILING);
    qobject_unref(qmp_ok(&g, "{'execute': 'sls-mem-ceiling', 'arguments': "
                         "{'size': %d}}", QTEST_RAM));
    g_assert_cmpuint(mem_batch(&g, SLSVIRT_CMD_RECLAIM, two, 2), ==,
                     SLSVIRT_ST_OK);
    g_assert_cmpuint(rd64(&g, SLSVIRT_REG_MEM_RELEASED_PAGES), ==, 0);
    fixture_stop(&g);
    unlink(file);
    rmdir(dir);
}

/* The release batch is ready before the cut; only the doorbell is after. */
static void rel_arm(Fixture *f, uint64_t addr, uint64_t len)
{
    qtest_writeq(f->qts, DESC_AT, addr);
    qtest_writeq(f->qts, DESC_AT + 8, len);
    qpci_io_writeq(f->dev, f->bar, SLSVIRT_REG_MEM_DESC_ADDR, DESC_AT);
    qpci_io_writel(f->dev, f->bar, SLSVIRT_REG_MEM_DESC_COUNT, 1);
}

static void rel_release(Fixture *f, uint64_t addr, uint64_t len)
{
    doorbell(f, SLSVIRT_CMD_RELEASE);
    g_assert_cmpuint(rd32(f, SLSVIRT_REG_CMD_STATUS), ==, SLSVIRT_ST_OK);
}

/* A delta that lists the released pages, as zero pages. */
static void rel_check_next(FakeHost *h, uint64_t npages)
{
    g_mutex_lock(&h->lock);
    g_assert(!(h->last_flags & SLS_EPOCH_F_FULL));
    g_assert_cmpuint(h->last_pages->len, >=, npages);
    g_mutex_unlock(&h->lock);
    g_assert_cmpuint(fake_host_watched(h, 0), ==, npages);
}

static void rel_reclaim(Fixture *f, uint64_t addr, uint64_t len)
{
    g_assert_cmpuint(mem_one(f, SLSVIRT_CMD_RECLAIM, addr, len), ==,
                     SLSVIRT_ST_OK);
}

/*
 * A RELEASE inside an open copy window: the epoch being copied keeps the
 * bytes from before the release (the discard goes through the same
 * copy-before-write path as any write), and the next epoch is a delta
 * that lists the released pages with zeros (hostd stores those as ZERO
 * entries: the release is recorded there, no data written).
 */
static void test_mem_release_during_copy(void)
{
    static const CowCase c = {
        .fill = 0xc3,
        .arm = rel_arm,
        .act = rel_release,
        .check_next = rel_check_next,
        .undo = rel_reclaim,
    };

    run_in_copy_window(&c);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    qtest_add_func("/slsvirt-pci/identity", test_identity);
    qtest_add_func("/slsvirt-pci/persist-without-host",
                   test_persist_without_host);
    qtest_add_func("/slsvirt-pci/hostile-accesses", test_hostile_accesses);
    qtest_add_func("/slsvirt-pci/persist-roundtrip", test_persist_roundtrip);
    qtest_add_func("/slsvirt-pci/doorbell-storm", test_doorbell_storm);
    qtest_add_func("/slsvirt-pci/failed-epoch", test_failed_epoch);
    qtest_add_func("/slsvirt-pci/delta-epochs", test_delta_epochs);
    qtest_add_func("/slsvirt-pci/copy-before-write", test_copy_before_write);
    qtest_add_func("/slsvirt-pci/unchanged-pages", test_unchanged_pages);
    qtest_add_func("/slsvirt-pci/mem/release-reclaim",
                   test_mem_release_reclaim);
    qtest_add_func("/slsvirt-pci/mem/hostile", test_mem_hostile);
    qtest_add_func("/slsvirt-pci/mem/guest-stats", test_mem_guest_stats);
    qtest_add_func("/slsvirt-pci/mem/ceiling", test_mem_ceiling);
    qtest_add_func("/slsvirt-pci/mem/target-vector", test_mem_target_vector);
    qtest_add_func("/slsvirt-pci/mem/off", test_mem_off);
    qtest_add_func("/slsvirt-pci/mem/state-roundtrip",
                   test_mem_state_roundtrip);
    qtest_add_func("/slsvirt-pci/mem/release-during-copy",
                   test_mem_release_during_copy);
    return g_test_run();
}
