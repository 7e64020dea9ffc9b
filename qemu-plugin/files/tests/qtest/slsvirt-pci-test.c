/*
 * QTest for the slsvirt-pci device: registers, hostile accesses, doorbell
 * storms, and the checkpoint handshake against a minimal in-test hostd.
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

static void fixture_start(Fixture *f, const char *socket_path)
{
    /* cow-max-pages: the copy-before-write test cuts 32 MiB deltas */
    f->qts = qtest_initf("-nodefaults -device slsvirt-pci,addr=04.0,vm=qtest,"
                         "cow-max-pages=65536,socket=%s", socket_path);
    f->bus = qpci_new_pc(f->qts, NULL);
    f->dev = qpci_device_find(f->bus, SLS_DEVFN);
    g_assert(f->dev);
    qpci_device_enable(f->dev);
    f->bar = qpci_iomap(f->dev, SLSVIRT_BAR_REGS, NULL);
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
                    SLSVIRT_F_PERSIST | SLSVIRT_F_GENERATION);
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
    static const uint32_t bad_cmds[] = { 0, 2, 0x80000000u, 0xffffffffu };
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
 * Copy-before-write: the epoch's pages are copied into staging after the
 * machine resumes, so a write that lands while they are being copied must
 * not reach the epoch. Fill 32 MiB with 0xa1, cut an epoch, overwrite it
 * with 0xb2 at once (qtest writes are DMA-like: address_space_write), and
 * check hostd saw only 0xa1 in that epoch and only 0xb2 in the next. The
 * overwrite has to land inside the copy window for this to test anything:
 * query-sls's cow-writer-copies says whether it did, so retry until it has.
 */
static void test_copy_before_write(void)
{
    const uint64_t addr = 0x1000000, len = 32 * 1024 * 1024;
    const uint64_t npages = len / SLS_PAGE_SIZE;
    uint64_t writer_copies = 0;
    FakeHost h;
    Fixture f;
    int attempt;

    fake_host_start(&h, 0);
    h.watch_lo = addr / SLS_PAGE_SIZE;
    h.watch_hi = h.watch_lo + npages;
    fixture_start(&f, h.path);
    doorbell(&f, SLSVIRT_CMD_PERSIST);
    wait_epoch(&f, SLSVIRT_REG_DURABLE_EPOCH, rd64(&f, SLSVIRT_REG_TARGET_EPOCH));

    for (attempt = 0; attempt < 10 && !writer_copies; attempt++) {
        QDict *rsp;
        uint64_t e;

        qtest_memset(f.qts, addr, 0xa1, len);
        doorbell(&f, SLSVIRT_CMD_PERSIST);
        e = rd64(&f, SLSVIRT_REG_TARGET_EPOCH);
        qtest_memset(f.qts, addr, 0xb2, len);
        wait_epoch(&f, SLSVIRT_REG_DURABLE_EPOCH, e);
        g_assert_cmpuint(h.watch_epoch, ==, e);
        g_assert_cmpuint(fake_host_watched(&h, 0xa1), ==, npages);

        doorbell(&f, SLSVIRT_CMD_PERSIST);
        e = rd64(&f, SLSVIRT_REG_TARGET_EPOCH);
        wait_epoch(&f, SLSVIRT_REG_DURABLE_EPOCH, e);
        g_assert_cmpuint(h.watch_epoch, ==, e);
        g_assert_cmpuint(fake_host_watched(&h, 0xb2), ==, npages);

        rsp = qtest_qmp(f.qts, "{'execute': 'query-sls'}");
        g_assert(qdict_haskey(rsp, "return"));
        g_assert(qdict_get_bool(qdict_get_qdict(rsp, "return"),
                                "copy-before-write"));
        g_assert_cmpuint(qdict_get_int(qdict_get_qdict(rsp, "return"),
                                       "cow-retries"), ==, 0);
        writer_copies = qdict_get_int(qdict_get_qdict(rsp, "return"),
                                      "cow-writer-copies");
        qobject_unref(rsp);
    }
    g_assert_cmpuint(writer_copies, >, 0);
    fixture_stop(&f);
    fake_host_stop(&h);
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
    return g_test_run();
}
