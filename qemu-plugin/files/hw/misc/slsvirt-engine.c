/*
 * slsvirt checkpoint engine
 *
 * Captures the whole VM -- RAM and device state -- for one epoch while the
 * vCPUs are paused (without a run-state change: no STOP/RESUME events, no
 * block flush), hands it to hostd (slsvirtd) over a unix socket, and tells
 * the guest through the device when hostd reports the epoch durable.
 * Protocol: include/slsvirt/proto.h. One capture is in flight at a time;
 * persist requests that arrive meanwhile are coalesced into the next one.
 *
 * The first capture after attaching to a store (or after a restore, or a
 * failed epoch) is FULL: all of RAM is copied into the staging memfd shared
 * with hostd. Every later capture is a DELTA: the engine is its own dirty-
 * tracking client (global dirty log reason GLOBAL_DIRTY_SLS; it harvests
 * QEMU's DIRTY_MEMORY_MIGRATION bitmap, so migration is blocked while it
 * runs) and copies only the pages written since the previous capture.
 * With period-ms set, a timer requests a capture every period; a tick that
 * finds an epoch in flight leaves one request pending, so under a slow disk
 * epochs run back to back and the period stretches by itself, with staging
 * memory bounded to one capture.
 *
 * Copyright (c) 2026 The slsvirt authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "block/block-global-state.h"
#include <sys/socket.h>
#include <sys/un.h>
#include "qemu/crc32c.h"
#include "qemu/cutils.h"
#include "qemu/units.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/memfd.h"
#include "qemu/processor.h"
#include "qemu/sockets.h"
#include "qemu/timer.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-slsvirt.h"
#include "qom/object.h"
#include "exec/cpu-common.h"
#include "exec/memory.h"
#include "exec/ram_addr.h"
#include "migration/blocker.h"
#include "system/cpu-timers.h"
#include "system/cpus.h"
#include "system/kvm.h"
#include "system/kvm-sls-epoch.h"
#include "system/runstate.h"
#include "system/system.h"
#include "system/qtest.h"
#include "system/tcg.h"
#include "io/channel-buffer.h"
#include "migration/global_state.h"
#include "migration/qemu-file.h"
#include "migration/savevm.h"
#include "hw/misc/slsvirt.h"
#include "trace.h"

#define SLSVIRT_IO_TIMEOUT_S     30
#define SLSVIRT_RECONNECT_NS     (1 * NANOSECONDS_PER_SECOND)

static Notifier slsvirt_machine_done;
static VMChangeStateEntry *slsvirt_vmse;

static void slsvirt_set_error(SlsvirtEngine *e, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);

static void slsvirt_set_error(SlsvirtEngine *e, const char *fmt, ...)
{
    va_list ap;

    g_free(e->last_error);
    va_start(ap, fmt);
    e->last_error = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    warn_report("%s%s", g_str_has_prefix(e->last_error, "slsvirt: ") ? ""
                : "slsvirt: ", e->last_error);
}

bool slsvirt_engine_connected(SlsvirtState *s)
{
    return s->engine.sock >= 0;
}

/* ---- wire helpers ---------------------------------------------------- */

static uint32_t slsvirt_crc(const void *buf, size_t len)
{
    return len ? crc32c(0xffffffff, buf, len) : 0;
}

static bool slsvirt_send(SlsvirtState *s, uint16_t type, const void *payload,
                         uint32_t len, int fd, Error **errp)
{
    SlsvirtEngine *e = &s->engine;
    struct sls_msg_hdr hdr = {
        .magic = cpu_to_le32(SLS_PROTO_MAGIC),
        .version = cpu_to_le16(SLS_PROTO_VERSION),
        .type = cpu_to_le16(type),
        .length = cpu_to_le32(len),
        .payload_crc = cpu_to_le32(slsvirt_crc(payload, len)),
        .seq = cpu_to_le64(++e->tx_seq),
    };
    struct iovec iov[2] = {
        { .iov_base = &hdr, .iov_len = sizeof(hdr) },
        { .iov_base = (void *)payload, .iov_len = len },
    };
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };
    size_t total = sizeof(hdr) + len, done = 0;

    if (fd >= 0) {
        struct cmsghdr *cmsg;

        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof(control.buf);
        cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
    }

    while (done < total) {
        ssize_t n = sendmsg(e->sock, &msg, MSG_NOSIGNAL);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            error_setg_errno(errp, errno, "slsvirt: send to hostd failed");
            return false;
        }
        done += n;
        /* Resume a short send; the fd went with the first byte. */
        msg.msg_control = NULL;
        msg.msg_controllen = 0;
        while (n > 0 && msg.msg_iovlen) {
            size_t step = MIN((size_t)n, msg.msg_iov->iov_len);

            msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + step;
            msg.msg_iov->iov_len -= step;
            n -= step;
            if (!msg.msg_iov->iov_len) {
                msg.msg_iov++;
                msg.msg_iovlen--;
            }
        }
    }
    return true;
}

/*
 * Receive exactly @len bytes. @fds (optional, room for SLS_LAZY_MAX_FILES)
 * collects descriptors passed with them (SCM_RIGHTS); *@nr_fds counts them.
 */
static bool slsvirt_recv_all(int sock, void *buf, size_t len, int *fds,
                             int *nr_fds, Error **errp)
{
    size_t done = 0;

    while (done < len) {
        union {
            char buf[CMSG_SPACE(SLS_LAZY_MAX_FILES * sizeof(int))];
            struct cmsghdr align;
        } control;
        struct iovec iov = {
            .iov_base = (char *)buf + done, .iov_len = len - done,
        };
        struct msghdr msg = {
            .msg_iov = &iov, .msg_iovlen = 1,
            .msg_control = fds ? control.buf : NULL,
            .msg_controllen = fds ? sizeof(control.buf) : 0,
        };
        ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        struct cmsghdr *cmsg;

        for (cmsg = fds && n > 0 ? CMSG_FIRSTHDR(&msg) : NULL; cmsg;
             cmsg = CMSG_NXTHDR(&msg, cmsg)) {
            int k, nfd = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);

            if (cmsg->cmsg_level != SOL_SOCKET ||
                cmsg->cmsg_type != SCM_RIGHTS) {
                continue;
            }
            for (k = 0; k < nfd; k++) {
                int fd;

                memcpy(&fd, CMSG_DATA(cmsg) + k * sizeof(int), sizeof(int));
                if (*nr_fds < SLS_LAZY_MAX_FILES) {
                    fds[(*nr_fds)++] = fd;
                } else {
                    close(fd);
                }
            }
        }

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            error_setg_errno(errp, errno, "slsvirt: receive from hostd failed");
            return false;
        }
        if (n == 0) {
            error_setg(errp, "slsvirt: hostd closed the connection");
            return false;
        }
        done += n;
    }
    return true;
}

/*
 * Receive one message. hostd is trusted more than the guest, but a broken
 * peer must still not make us read past a buffer: every length is checked
 * against what the type allows before the payload is read.
 */
static uint8_t *slsvirt_recv_fds(SlsvirtState *s, uint16_t want_type,
                                 size_t fixed_len, uint32_t *out_len,
                                 int *fds, int *nr_fds, Error **errp)
{
    struct sls_msg_hdr hdr;
    uint32_t len;
    g_autofree uint8_t *payload = NULL;

    if (!slsvirt_recv_all(s->engine.sock, &hdr, sizeof(hdr), fds, nr_fds,
                          errp)) {
        return NULL;
    }
    len = le32_to_cpu(hdr.length);
    if (le32_to_cpu(hdr.magic) != SLS_PROTO_MAGIC ||
        le16_to_cpu(hdr.version) != SLS_PROTO_VERSION ||
        le16_to_cpu(hdr.type) != want_type ||
        len < fixed_len || len > SLS_PROTO_MAX_PAYLOAD) {
        error_setg(errp, "slsvirt: bad message from hostd (type %u, "
                   "length %u, want type %u)", le16_to_cpu(hdr.type), len,
                   want_type);
        return NULL;
    }
    payload = g_malloc(len ? len : 1);
    if (!slsvirt_recv_all(s->engine.sock, payload, len, fds, nr_fds, errp)) {
        return NULL;
    }
    if (slsvirt_crc(payload, len) != le32_to_cpu(hdr.payload_crc)) {
        error_setg(errp, "slsvirt: message from hostd fails its crc");
        return NULL;
    }
    *out_len = len;
    return g_steal_pointer(&payload);
}

static uint8_t *slsvirt_recv(SlsvirtState *s, uint16_t want_type,
                             size_t fixed_len, uint32_t *out_len,
                             Error **errp)
{
    return slsvirt_recv_fds(s, want_type, fixed_len, out_len, NULL, NULL,
                            errp);
}

/* ---- connection ------------------------------------------------------ */

static void slsvirt_fail_epochs(SlsvirtState *s)
{
    SlsvirtEngine *e = &s->engine;
    bool changed = false;

    if (e->inflight_epoch) {
        s->failed_epoch = MAX(s->failed_epoch, e->inflight_epoch);
        e->inflight_epoch = 0;
        e->epochs_failed++;
        changed = true;
    }
    if (e->request_pending) {
        /* Waiters were promised next_epoch: burn that number. */
        s->failed_epoch = MAX(s->failed_epoch, e->next_epoch);
        e->next_epoch++;
        e->request_pending = false;
        e->epochs_failed++;
        changed = true;
    }
    if (changed) {
        /* What the lost epoch carried is in no store: start over. */
        e->need_full = true;
        trace_slsvirt_epoch_failed(s->failed_epoch);
        slsvirt_epoch_notify(s);
    }
}

static void slsvirt_cow_abort(SlsvirtEngine *e);

static void slsvirt_detach(SlsvirtState *s, Error *err)
{
    SlsvirtEngine *e = &s->engine;

    slsvirt_cow_abort(e);
    if (err) {
        slsvirt_set_error(e, "%s", error_get_pretty(err));
        error_free(err);
    }
    if (e->sock >= 0) {
        qemu_set_fd_handler(e->sock, NULL, NULL, NULL);
        close(e->sock);
        e->sock = -1;
    }
    e->need_full = true;
    slsvirt_fail_epochs(s);
}

static void slsvirt_readable(void *opaque);

static int slsvirt_add_block(RAMBlock *rb, void *opaque)
{
    SlsvirtState *s = opaque;
    SlsvirtEngine *e = &s->engine;
    SlsvirtRamBlock *b;

    if (!qemu_ram_is_migratable(rb)) {
        return 0;
    }
    if (e->nr_blocks == SLS_MAX_RAM_BLOCKS ||
        strlen(qemu_ram_get_idstr(rb)) >= SLS_IDSTR_LEN) {
        return -E2BIG;
    }
    b = &e->blocks[e->nr_blocks++];
    b->rb = rb;
    b->host = qemu_ram_get_host_addr(rb);
    b->ram_offset = qemu_ram_get_offset(rb);
    b->length = ROUND_UP(qemu_ram_get_max_length(rb), SLS_PAGE_SIZE);
    b->staging_offset = e->staging_size;
    g_free(b->dirty);
    g_free(b->cow_claim);
    g_free(b->cow_done);
    g_free(b->cow_same);
    g_free(b->released);
    b->dirty = bitmap_new(b->length / SLS_PAGE_SIZE);
    b->cow_claim = bitmap_new(b->length / SLS_PAGE_SIZE);
    b->cow_done = bitmap_new(b->length / SLS_PAGE_SIZE);
    b->cow_same = bitmap_new(b->length / SLS_PAGE_SIZE);
    b->released = bitmap_new(b->length / SLS_PAGE_SIZE);
    e->staging_size += b->length;
    return 0;
}

static bool slsvirt_layout(SlsvirtState *s, Error **errp)
{
    SlsvirtEngine *e = &s->engine;
    size_t old_size = e->staging_size;

    e->nr_blocks = 0;
    e->staging_size = 0;
    e->need_full = true;
    if (qemu_ram_foreach_block(slsvirt_add_block, s)) {
        error_setg(errp, "slsvirt: more than %d RAM blocks or an idstr too "
                   "long", SLS_MAX_RAM_BLOCKS);
        return false;
    }
    if (e->staging && old_size != e->staging_size) {
        qemu_memfd_free(e->staging, old_size, e->staging_fd);
        e->staging = NULL;
    }
    if (!e->staging) {
        e->staging = qemu_memfd_alloc("slsvirt-staging", e->staging_size,
                                      F_SEAL_GROW | F_SEAL_SHRINK,
                                      &e->staging_fd, errp);
        if (!e->staging) {
            return false;
        }
    }
    return true;
}

static bool slsvirt_connect(SlsvirtState *s, Error **errp)
{
    SlsvirtEngine *e = &s->engine;
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    struct timeval tv = { .tv_sec = SLSVIRT_IO_TIMEOUT_S };
    g_autofree uint8_t *hello = NULL;
    g_autofree uint8_t *reply = NULL;
    struct sls_msg_hello *h;
    struct sls_msg_hello_ack ack;
    size_t hello_len;
    uint32_t reply_len;
    unsigned i;

    if (e->sock >= 0) {
        return true;
    }
    e->last_connect_ns = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
    e->busy = false;
    if (strlen(s->socket_path) >= sizeof(addr.sun_path)) {
        error_setg(errp, "slsvirt: socket path too long: %s", s->socket_path);
        return false;
    }
    if (!slsvirt_layout(s, errp)) {
        return false;
    }

    e->sock = qemu_socket(AF_UNIX, SOCK_STREAM, 0);
    if (e->sock < 0) {
        error_setg_errno(errp, errno, "slsvirt: socket");
        return false;
    }
    setsockopt(e->sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(e->sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    pstrcpy(addr.sun_path, sizeof(addr.sun_path), s->socket_path);
    if (connect(e->sock, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        error_setg_errno(errp, errno, "slsvirt: cannot reach hostd at %s",
                         s->socket_path);
        goto fail;
    }

    hello_len = sizeof(*h) + e->nr_blocks * sizeof(struct sls_ram_block);
    hello = g_malloc0(hello_len);
    h = (struct sls_msg_hello *)hello;
    h->min_version = cpu_to_le32(SLS_PROTO_VERSION);
    h->max_version = cpu_to_le32(SLS_PROTO_VERSION);
    pstrcpy(h->vm_name, sizeof(h->vm_name), s->vm_name);
    h->page_size = cpu_to_le32(SLS_PAGE_SIZE);
    h->nr_blocks = cpu_to_le32(e->nr_blocks);
    h->staging_size = cpu_to_le64(e->staging_size);
    for (i = 0; i < e->nr_blocks; i++) {
        struct sls_ram_block *wb = (struct sls_ram_block *)(h + 1) + i;

        pstrcpy(wb->idstr, sizeof(wb->idstr),
                qemu_ram_get_idstr(e->blocks[i].rb));
        wb->length = cpu_to_le64(e->blocks[i].length);
        wb->staging_offset = cpu_to_le64(e->blocks[i].staging_offset);
    }
    e->tx_seq = 0;
    if (!slsvirt_send(s, SLS_MSG_HELLO, hello, hello_len, e->staging_fd,
                      errp)) {
        goto fail;
    }
    reply = slsvirt_recv(s, SLS_MSG_HELLO_ACK, sizeof(ack), &reply_len, errp);
    if (!reply) {
        goto fail;
    }
    memcpy(&ack, reply, sizeof(ack));
    ack.message[sizeof(ack.message) - 1] = '\0';
    e->busy = (int32_t)le32_to_cpu(ack.status) == -EBUSY;
    if (ack.status) {
        error_setg(errp, "slsvirt: hostd refused vm '%s': %s (%d)",
                   s->vm_name, ack.message, (int32_t)le32_to_cpu(ack.status));
        goto fail;
    }
    e->next_epoch = MAX(e->next_epoch, le64_to_cpu(ack.durable_epoch) + 1);
    trace_slsvirt_connected(s->vm_name, e->nr_blocks, e->staging_size,
                            le64_to_cpu(ack.durable_epoch));
    qemu_set_fd_handler(e->sock, slsvirt_readable, NULL, s);
    return true;

fail:
    close(e->sock);
    e->sock = -1;
    return false;
}

/*
 * hostd serves one connection per VM. Right after this VM's previous QEMU
 * died, hostd may still be finishing that process's epoch in flight and
 * answer -EBUSY for a moment: wait for it (bounded) rather than run the
 * restored VM without a store.
 */
#define SLSVIRT_BUSY_RETRY_MS    100
#define SLSVIRT_BUSY_RETRIES     100

static bool slsvirt_connect_wait(SlsvirtState *s, Error **errp)
{
    int tries;

    for (tries = 0; ; tries++) {
        Error *err = NULL;

        if (slsvirt_connect(s, &err)) {
            return true;
        }
        if (!s->engine.busy || tries == SLSVIRT_BUSY_RETRIES) {
            error_propagate(errp, err);
            return false;
        }
        error_free(err);
        g_usleep(SLSVIRT_BUSY_RETRY_MS * 1000);
    }
}

/* Try to reach hostd again soon, but at most once per SLSVIRT_RECONNECT_NS
 * however often a guest doorbell or a period tick asks. */
static void slsvirt_schedule_reconnect(SlsvirtEngine *e)
{
    if (!timer_pending(e->reconnect_timer)) {
        timer_mod(e->reconnect_timer,
                  MAX(qemu_clock_get_ns(QEMU_CLOCK_REALTIME),
                      e->last_connect_ns + SLSVIRT_RECONNECT_NS));
    }
}

static void slsvirt_reconnect(void *opaque)
{
    SlsvirtState *s = opaque;
    Error *err = NULL;

    if (!slsvirt_connect_wait(s, &err)) {
        slsvirt_set_error(&s->engine, "%s", error_get_pretty(err));
        error_free(err);
    }
}

/* ---- capture --------------------------------------------------------- */

/* Device state in qemu_save_device_state() format (what xen-save-devices-
 * state and COLO use): every section but RAM. */
static uint8_t *slsvirt_save_devices(size_t *len, Error **errp)
{
    QIOChannelBuffer *bioc = qio_channel_buffer_new(64 * KiB);
    QEMUFile *f;
    uint8_t *data = NULL;
    int ret;

    qio_channel_set_name(QIO_CHANNEL(bioc), "slsvirt-devstate");
    f = qemu_file_new_output(QIO_CHANNEL(bioc));
    object_unref(OBJECT(bioc));
    /* The "globalstate" section carries the run state; a restored epoch is
     * a running VM (what xen-save-devices-state records too). */
    global_state_store_running();
    ret = qemu_save_device_state(f);
    if (ret == 0) {
        ret = qemu_fflush(f);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "slsvirt: saving device state failed");
    } else if (bioc->usage > SLS_PROTO_MAX_PAYLOAD - sizeof(struct sls_msg_epoch)) {
        error_setg(errp, "slsvirt: device state too large (%zu bytes)",
                   bioc->usage);
    } else {
        *len = bioc->usage;
        data = g_memdup2(bioc->data, bioc->usage);
    }
    qemu_fclose(f);
    return data;
}

static bool slsvirt_tracking_start(SlsvirtState *s, Error **errp)
{
    SlsvirtEngine *e = &s->engine;

    if (e->tracking) {
        return true;
    }
    if (!e->migration_blocker) {
        error_setg(&e->migration_blocker, "slsvirt-pci: continuous "
                   "checkpointing owns the dirty log while a store is "
                   "attached");
        if (migrate_add_blocker(&e->migration_blocker, errp) < 0) {
            return false;
        }
    }
    if (!memory_global_dirty_log_start(GLOBAL_DIRTY_SLS, errp)) {
        return false;
    }
    e->tracking = true;
    return true;
}

static void slsvirt_tracking_stop(SlsvirtState *s)
{
    SlsvirtEngine *e = &s->engine;

    if (e->tracking) {
        memory_global_dirty_log_stop(GLOBAL_DIRTY_SLS);
        e->tracking = false;
    }
    if (e->migration_blocker) {
        migrate_del_blocker(&e->migration_blocker);
    }
}

/*
 * Dirty-page source (see SlsDirtyTracking). Under KVM with slsvirt's
 * KVM_CAP_SLS_EPOCH (kvm-patches/), one KVM_SLS_EPOCH_HARVEST per epoch
 * moves the pages KVM saw written into QEMU's dirty memory and re-arms
 * KVM's tracking for them; otherwise the stock dirty log or dirty ring,
 * through memory_global_dirty_log_sync(). Either way the pages end up in
 * DIRTY_MEMORY_MIGRATION, where slsvirt_harvest_block() takes them.
 */
static bool slsvirt_kvm_epoch(SlsvirtEngine *e)
{
    return !e->kvm_epoch_off && kvm_sls_epoch_available();
}

static SlsDirtyTracking slsvirt_dirty_tracking(SlsvirtEngine *e)
{
    if (!kvm_enabled()) {
        return SLS_DIRTY_TRACKING_TCG;
    }
    if (slsvirt_kvm_epoch(e)) {
        return SLS_DIRTY_TRACKING_KVM_SLS_EPOCH;
    }
    return kvm_dirty_ring_enabled() ? SLS_DIRTY_TRACKING_KVM_DIRTY_RING :
                                      SLS_DIRTY_TRACKING_KVM_DIRTY_LOG;
}

static void slsvirt_dirty_sync(SlsvirtEngine *e)
{
    if (slsvirt_kvm_epoch(e)) {
        int64_t r = kvm_sls_epoch_harvest();

        if (r >= 0) {
            return;
        }
        /*
         * The pages harvested so far are marked; KVM still logs the rest
         * in its bitmaps, where the stock sync below finds them.
         */
        error_report("slsvirt: KVM_SLS_EPOCH_HARVEST failed (%s); "
                     "using the stock KVM dirty log from now on",
                     strerror(-r));
        e->kvm_epoch_off = true;
    }
    memory_global_dirty_log_sync(false);
}

/*
 * Move the pages written since the last harvest from QEMU's dirty memory
 * into b->dirty, clearing them there and re-arming write tracking (TCG's
 * TLB, KVM's dirty log). Modelled on cpu_physical_memory_sync_dirty_bitmap():
 * whole words are taken with one atomic exchange each; a block whose pages
 * do not start on a word boundary, and a tail that shares its word with
 * the next block, go page by page. Returns the number of pages.
 */
static uint64_t slsvirt_harvest_block(SlsvirtRamBlock *b, bool rearmed)
{
    RAMBlock *rb = b->rb;
    ram_addr_t base = qemu_ram_get_offset(rb);
    ram_addr_t length = qemu_ram_get_used_length(rb);
    unsigned long first = base >> TARGET_PAGE_BITS;
    unsigned long npages = length >> TARGET_PAGE_BITS;
    unsigned long words = 0, page, k;
    uint64_t num = 0;

    if (!(first % BITS_PER_LONG)) {
        unsigned long * const *src;
        unsigned long idx = first / DIRTY_MEMORY_BLOCK_SIZE;
        unsigned long offset = BIT_WORD(first % DIRTY_MEMORY_BLOCK_SIZE);

        words = npages / BITS_PER_LONG;
        src = qatomic_rcu_read(
                &ram_list.dirty_memory[DIRTY_MEMORY_MIGRATION])->blocks;
        for (k = 0; k < words; k++) {
            if (src[idx][offset]) {
                unsigned long bits = qatomic_xchg(&src[idx][offset], 0);

                b->dirty[k] |= bits;
                num += ctpopl(bits);
            }
            if (++offset >= BITS_TO_LONGS(DIRTY_MEMORY_BLOCK_SIZE)) {
                offset = 0;
                idx++;
            }
        }
        if (num) {
            cpu_physical_memory_dirty_bits_cleared(base,
                    (ram_addr_t)words * BITS_PER_LONG << TARGET_PAGE_BITS);
        }
        /* KVM_SLS_EPOCH_HARVEST re-armed KVM's tracking already. */
        if (words && !rearmed) {
            memory_region_clear_dirty_bitmap(rb->mr, 0,
                    (hwaddr)words * BITS_PER_LONG << TARGET_PAGE_BITS);
        }
    }
    for (page = words * BITS_PER_LONG; page < npages; page++) {
        if (cpu_physical_memory_test_and_clear_dirty(
                base + ((ram_addr_t)page << TARGET_PAGE_BITS),
                TARGET_PAGE_SIZE, DIRTY_MEMORY_MIGRATION)) {
            set_bit(page, b->dirty);
            num++;
        }
    }
    return num;
}

static void slsvirt_record_stop(SlsvirtEngine *e, uint64_t stop_ns)
{
    unsigned bucket = 0;
    uint64_t us = stop_ns / 1000;

    e->last_stop_ns = stop_ns;
    e->max_stop_ns = MAX(e->max_stop_ns, stop_ns);
    e->total_stop_ns += stop_ns;
    e->stop_ring[e->nr_stops++ % SLSVIRT_STOP_RING] = stop_ns;
    while (bucket < SLSVIRT_HIST_BUCKETS && us >= (1ull << bucket)) {
        bucket++;
    }
    e->stop_hist[bucket]++;
}

/*
 * Build the EPOCH message for a capture and hand it to hostd. @pages lists
 * a delta's pages as staging page indices (little endian); a FULL epoch
 * lists none.
 */
static void slsvirt_send_epoch(SlsvirtState *s, uint64_t epoch, bool full,
                               int64_t stop_ns, const uint8_t *devstate,
                               size_t devstate_len, const uint64_t *pages,
                               uint64_t nr_pages)
{
    SlsvirtEngine *e = &s->engine;
    g_autofree uint8_t *msg = NULL;
    struct sls_msg_epoch *ep;
    Error *err = NULL;
    size_t msg_len;

    msg_len = sizeof(*ep) + devstate_len + nr_pages * sizeof(uint64_t);
    if (msg_len > SLS_PROTO_MAX_PAYLOAD) {
        /* Only a guest of tens of GiB dirtying most of it gets here; the
         * next capture is FULL and lists no pages. */
        slsvirt_set_error(e, "epoch %" PRIu64 ": %" PRIu64 " dirty pages do "
                          "not fit one message", epoch, nr_pages);
        slsvirt_fail_epochs(s);
        return;
    }
    msg = g_malloc0(msg_len);
    ep = (struct sls_msg_epoch *)msg;
    ep->epoch = cpu_to_le64(epoch);
    ep->parent_epoch = cpu_to_le64(e->parent_epoch);
    ep->flags = cpu_to_le64(full ? SLS_EPOCH_F_FULL : 0);
    ep->capture_realtime_ns = cpu_to_le64(get_clock_realtime());
    ep->stop_ns = cpu_to_le64(stop_ns);
    ep->devstate_len = cpu_to_le32(devstate_len);
    ep->nr_pages = cpu_to_le32(nr_pages);
    memcpy(ep + 1, devstate, devstate_len);
    if (nr_pages) {
        memcpy((uint8_t *)(ep + 1) + devstate_len, pages,
               nr_pages * sizeof(uint64_t));
    }

    e->last_epoch_pages = full ? e->staging_size / SLS_PAGE_SIZE : nr_pages;
    e->epochs_full += full;
    if (!slsvirt_send(s, SLS_MSG_EPOCH, msg, msg_len, -1, &err)) {
        slsvirt_detach(s, err);
    }
}

/*
 * Staging mirrors the store: every page's staging copy holds its bytes in
 * the newest epoch that was sent with it, and every sent epoch is either
 * durable or followed by a FULL capture (a failed or aborted epoch, a new
 * connection and a restore all set need_full). So a dirty page whose bytes
 * equal its staging copy -- written back with the same bytes, a lock taken
 * and released, a counter moved and moved back -- is already in the store
 * and a DELTA can leave it out. Returns true when it was left out (nothing
 * copied), false after copying it. FULL captures copy every page.
 */
static bool slsvirt_copy_if_changed(SlsvirtEngine *e, SlsvirtRamBlock *b,
                                    uint64_t off)
{
    uint8_t *dst = e->staging + b->staging_offset + off;

    /* A lazily restored VM gives staging back after every epoch (it would
     * otherwise hold a copy of RAM per clone): no mirror to compare with. */
    if (!e->lazy && !memcmp(dst, b->host + off, SLS_PAGE_SIZE)) {
        return true;
    }
    memcpy(dst, b->host + off, SLS_PAGE_SIZE);
    return false;
}

/*
 * Staging for a FULL capture of @b without its released pages: those are
 * zero in staging and are not read from RAM (reading a discarded page of a
 * shared memory backend would allocate it again). Called with the vCPUs
 * paused. With @copy false only the released pages are zeroed and taken
 * out of @b->dirty (copy-before-write copies the rest after resuming).
 */
static void slsvirt_full_block(SlsvirtState *s, SlsvirtRamBlock *b, bool copy)
{
    SlsvirtEngine *e = &s->engine;
    uint64_t nbits = 0, npages = qemu_ram_get_max_length(b->rb) / SLS_PAGE_SIZE;
    const unsigned long *released = slsvirt_mem_released_of(s, b->rb, &nbits);
    uint8_t *staging = e->staging + b->staging_offset;
    uint64_t p = 0, end, zeroed = 0;

    if (!released) {
        if (copy) {
            memcpy(staging, b->host, qemu_ram_get_max_length(b->rb));
        }
        return;
    }
    nbits = MIN(nbits, npages);
    while (p < npages) {
        /* [p, end) in use, then [end, next) released */
        uint64_t next;

        end = p < nbits ? find_next_bit(released, nbits, p) : npages;
        end = MIN(end, npages);
        if (copy && end > p) {
            memcpy(staging + p * SLS_PAGE_SIZE, b->host + p * SLS_PAGE_SIZE,
                   (end - p) * SLS_PAGE_SIZE);
        }
        if (end >= npages) {
            break;
        }
        next = find_next_zero_bit(released, nbits, end);
        memset(staging + end * SLS_PAGE_SIZE, 0, (next - end) * SLS_PAGE_SIZE);
        if (!copy) {
            bitmap_clear(b->dirty, end, next - end);
        }
        zeroed += next - end;
        p = next;
    }
    trace_slsvirt_mem_capture_full(zeroed);
}

void slsvirt_engine_mem_released(SlsvirtState *s, RAMBlock *rb,
                                 uint64_t first, uint64_t npages)
{
    SlsvirtEngine *e = &s->engine;
    unsigned i;

    /*
     * The pages changed (to zero) behind the dirty log. The next epoch
     * lists them, with zeros in staging (slsvirt_zero_released): hostd
     * stores listed all-zero pages of a delta as ZERO index entries, no
     * data, so the release is recorded in that epoch and a restore of it
     * or a later one never brings the old bytes back. Called under the
     * BQL, like the capture: a release lands wholly before or after a cut.
     */
    for (i = 0; i < e->nr_blocks; i++) {
        SlsvirtRamBlock *b = &e->blocks[i];

        if (b->rb == rb && first + npages <= b->length / SLS_PAGE_SIZE) {
            bitmap_set(b->released, first, npages);
            return;
        }
    }
    /* Not laid out yet: the first capture is FULL anyway. */
}

/* Is page @p of @b released now? (Main RAM only; under the BQL.) */
static bool slsvirt_page_released(SlsvirtState *s, SlsvirtRamBlock *b,
                                  uint64_t p)
{
    uint64_t nbits = 0;
    const unsigned long *released = slsvirt_mem_released_of(s, b->rb, &nbits);

    return released && p < nbits && test_bit(p, released);
}

/*
 * At the cut (vCPUs paused): add the pages released since the last cut to
 * @b's copy set; returns how many were not in it already.
 */
static uint64_t slsvirt_take_released(SlsvirtRamBlock *b)
{
    unsigned long n = b->length / SLS_PAGE_SIZE, p;
    uint64_t added = 0;

    for (p = find_first_bit(b->released, n); p < n;
         p = find_next_bit(b->released, n, p + 1)) {
        added += !test_and_set_bit(p, b->dirty);
    }
    bitmap_zero(b->released, n);
    return added;
}

/*
 * Pages of a delta's copy set that are released now are zero: put zeros
 * in staging instead of reading them (reading a discarded page of a shared
 * memory backend would allocate it again). With @cow, mark them copied so
 * the window leaves them alone. Called with the vCPUs paused.
 */
static void slsvirt_zero_released(SlsvirtState *s, SlsvirtRamBlock *b,
                                  bool cow)
{
    uint64_t nbits = 0, n = b->length / SLS_PAGE_SIZE, p, zeroed = 0;
    const unsigned long *released = slsvirt_mem_released_of(s, b->rb, &nbits);

    if (!released) {
        return;
    }
    nbits = MIN(nbits, n);
    for (p = find_first_bit(released, nbits); p < nbits;
         p = find_next_bit(released, nbits, p + 1)) {
        if (!test_bit(p, b->dirty)) {
            continue;
        }
        memset(s->engine.staging + b->staging_offset + p * SLS_PAGE_SIZE, 0,
               SLS_PAGE_SIZE);
        if (cow) {
            set_bit(p, b->cow_claim);
            set_bit(p, b->cow_done);
        }
        zeroed++;
    }
    if (zeroed) {
        trace_slsvirt_mem_capture_delta(zeroed);
    }
}

/* ---- copy-before-write ----------------------------------------------- */

#define SLSVIRT_COW_BATCH        256     /* pages per copier run */

/* The engine whose copy window is open (one slsvirt-pci per machine). */
static SlsvirtEngine *slsvirt_cow_engine;

/*
 * Put page @page of @b into staging exactly once per window: whoever sets
 * its claim bit copies it; anyone else who needs it waits for its done bit.
 * Runs in the main loop (the copier, DMA under the BQL) and in vCPU
 * threads (their first store to the page) concurrently.
 */
static void slsvirt_cow_copy_page(SlsvirtEngine *e, SlsvirtRamBlock *b,
                                  unsigned long page, bool writer)
{
    unsigned long *done = &b->cow_done[BIT_WORD(page)];
    unsigned long mask = BIT_MASK(page);
    uint64_t off = (uint64_t)page * SLS_PAGE_SIZE;

    if (qatomic_load_acquire(done) & mask) {
        return;
    }
    if (!(qatomic_fetch_or(&b->cow_claim[BIT_WORD(page)], mask) & mask)) {
        uint8_t *dst = e->staging + b->staging_offset + off;

        /*
         * A page a lazy restore has not loaded yet comes from the store
         * (slsvirt_lazy_copy_page() copies it); else from guest RAM.
         */
        if (!slsvirt_lazy_copy_page(e, b, page, dst)) {
            if (e->cow_full) {
                memcpy(dst, b->host + off, SLS_PAGE_SIZE);
            } else if (slsvirt_copy_if_changed(e, b, off)) {
                qatomic_fetch_or(&b->cow_same[BIT_WORD(page)], mask);
            }
        }
        qatomic_fetch_or(done, mask);   /* full barrier: copy, then done */
        if (writer) {
            qatomic_inc(&e->cow_vcpu_copies);
        }
        return;
    }
    while (!(qatomic_load_acquire(done) & mask)) {
        cpu_relax();
    }
}

/* RAMWriteHook: see include/exec/memory.h. */
static void slsvirt_cow_hook(ram_addr_t start, ram_addr_t length,
                             bool written)
{
    SlsvirtEngine *e = qatomic_read(&slsvirt_cow_engine);
    unsigned i;

    if (!e || !length) {
        return;
    }
    for (i = 0; i < e->nr_blocks; i++) {
        SlsvirtRamBlock *b = &e->blocks[i];
        ram_addr_t lo = MAX(start, b->ram_offset);
        ram_addr_t hi = MIN(start + length, b->ram_offset + b->length);
        unsigned long page, last;

        if (lo >= hi) {
            continue;
        }
        last = (hi - 1 - b->ram_offset) / SLS_PAGE_SIZE;
        for (page = (lo - b->ram_offset) / SLS_PAGE_SIZE; page <= last;
             page++) {
            if (!test_bit(page, b->dirty)) {
                continue;               /* not part of this epoch */
            }
            if (!written) {
                slsvirt_cow_copy_page(e, b, page, true);
            } else if (!(qatomic_load_acquire(&b->cow_done[BIT_WORD(page)]) &
                         BIT_MASK(page))) {
                /* Written without the hook's "before" call: the copy
                 * could hold the new bytes. Redo this epoch. */
                qatomic_set(&e->cow_missed, true);
            }
        }
    }
}

/* Stop routing writes to us. Only vCPU pauses and the BQL order the
 * bitmaps' reuse: they change only while the vCPUs are paused. */
static void slsvirt_cow_close(SlsvirtEngine *e)
{
    qatomic_set(&ram_write_hook, NULL);
    qatomic_set(&slsvirt_cow_engine, NULL);
    e->cow_open = false;
    qemu_bh_cancel(e->cow_bh);
}

/* Forget the harvested pages of every block (sent, or in no store). */
static void slsvirt_clear_dirty(SlsvirtEngine *e)
{
    unsigned i;

    for (i = 0; i < e->nr_blocks; i++) {
        bitmap_zero(e->blocks[i].dirty, e->blocks[i].length / SLS_PAGE_SIZE);
    }
}

static void slsvirt_cow_free(SlsvirtEngine *e)
{
    g_clear_pointer(&e->cow_devstate, g_free);
    g_clear_pointer(&e->cow_pages, g_free);
    e->cow_devstate_len = 0;
    e->cow_nr_pages = e->cow_max_pages = 0;
}

/* Called with the vCPUs paused, after harvesting into b->dirty. */
static void slsvirt_cow_open(SlsvirtState *s, uint64_t epoch, bool full,
                             uint64_t dirty, uint8_t *devstate,
                             size_t devstate_len)
{
    SlsvirtEngine *e = &s->engine;
    unsigned i;

    for (i = 0; i < e->nr_blocks; i++) {
        SlsvirtRamBlock *b = &e->blocks[i];
        unsigned long n = b->length / SLS_PAGE_SIZE;

        if (full) {
            bitmap_fill(b->dirty, n);
            slsvirt_full_block(s, b, false);
        }
        bitmap_zero(b->cow_claim, n);
        bitmap_zero(b->cow_done, n);
        bitmap_zero(b->cow_same, n);
        if (!full) {
            slsvirt_zero_released(s, b, true);
        }
    }
    e->cow_epoch = epoch;
    e->cow_full = full;
    e->cow_block = 0;
    e->cow_page = 0;
    e->cow_devstate = devstate;
    e->cow_devstate_len = devstate_len;
    e->cow_pages = full ? NULL : g_new(uint64_t, MAX(dirty, 1));
    e->cow_max_pages = full ? 0 : dirty;
    e->cow_nr_pages = 0;
    e->cow_vcpu_copies = 0;
    e->cow_missed = false;
    e->cow_open = true;
    e->cow_epochs++;
    qatomic_set(&slsvirt_cow_engine, e);
    qatomic_set(&ram_write_hook, slsvirt_cow_hook);
}

static void slsvirt_cow_abort(SlsvirtEngine *e)
{
    if (!e->cow_open) {
        return;
    }
    slsvirt_cow_close(e);
    slsvirt_cow_free(e);
    /* The epoch's pages are in no store now; the next capture is FULL. */
    slsvirt_clear_dirty(e);
    e->need_full = true;
}

/*
 * The copier: copies the epoch's pages in batches from the main loop, so
 * device emulation and timers run between batches, then sends the epoch.
 */
static void slsvirt_cow_copy_bh(void *opaque)
{
    SlsvirtState *s = opaque;
    SlsvirtEngine *e = &s->engine;
    unsigned budget = SLSVIRT_COW_BATCH;
    uint64_t epoch = e->cow_epoch;

    if (!e->cow_open) {
        return;
    }
    while (e->cow_block < e->nr_blocks) {
        SlsvirtRamBlock *b = &e->blocks[e->cow_block];
        unsigned long n = b->length / SLS_PAGE_SIZE;
        unsigned long p = find_next_bit(b->dirty, n, e->cow_page);

        if (p >= n) {
            e->cow_block++;
            e->cow_page = 0;
            continue;
        }
        slsvirt_cow_copy_page(e, b, p, false);
        if (!e->cow_full && test_bit(p, b->cow_same)) {
            /* cow_done (acquire, in the copy) orders the same bit */
            e->unchanged_pages++;
        } else if (!e->cow_full) {
            if (e->cow_nr_pages == e->cow_max_pages) {
                /* b->dirty is frozen while the window is open */
                slsvirt_set_error(e, "epoch %" PRIu64 ": dirty set changed "
                                  "during the copy window", epoch);
                slsvirt_cow_abort(e);
                slsvirt_fail_epochs(s);
                return;
            }
            e->cow_pages[e->cow_nr_pages++] =
                cpu_to_le64((b->staging_offset +
                             (uint64_t)p * SLS_PAGE_SIZE) / SLS_PAGE_SIZE);
        }
        e->cow_page = p + 1;
        if (!--budget) {
            qemu_bh_schedule(e->cow_bh);
            return;
        }
    }

    slsvirt_cow_close(e);
    e->last_copy_ns = get_clock() - e->cow_opened_ns;
    e->cow_pages_total += e->cow_full ? e->staging_size / SLS_PAGE_SIZE :
                                        e->cow_nr_pages;
    e->cow_writer_copies += qatomic_read(&e->cow_vcpu_copies);
    trace_slsvirt_cow_done(epoch, e->cow_full ? e->staging_size /
                           SLS_PAGE_SIZE : e->cow_nr_pages,
                           qatomic_read(&e->cow_vcpu_copies), e->last_copy_ns,
                           qatomic_read(&e->cow_missed));
    if (qatomic_read(&e->cow_missed)) {
        /*
         * Some writer changed a page of the epoch without telling us
         * first, so staging may hold bytes from after the cut. Nothing
         * was sent: capture the same epoch number again, in full, so the
         * guest's waiters are served by it and nothing is lost.
         */
        e->cow_retries++;
        trace_slsvirt_cow_retry(epoch);
        slsvirt_cow_free(e);
        slsvirt_clear_dirty(e);
        e->inflight_epoch = 0;
        e->next_epoch = epoch;
        e->need_full = true;
        e->redo_request = e->request_pending;   /* for epoch + 1 */
        e->request_pending = true;
        qemu_bh_schedule(e->capture_bh);
        return;
    }
    slsvirt_clear_dirty(e);
    slsvirt_send_epoch(s, epoch, e->cow_full, e->cow_stop_ns,
                       e->cow_devstate, e->cow_devstate_len, e->cow_pages,
                       e->cow_nr_pages);
    slsvirt_cow_free(e);
}

/* ---- capture ----------------------------------------------------------- */

static void slsvirt_capture_bh(void *opaque)
{
    SlsvirtState *s = opaque;
    SlsvirtEngine *e = &s->engine;
    Error *err = NULL;
    g_autofree uint8_t *devstate = NULL;
    g_autofree uint64_t *pages = NULL;
    size_t devstate_len = 0;
    uint64_t epoch, nr_pages = 0, dirty = 0;
    int64_t t0, stop_ns;
    int64_t t_paused, t_harvested = 0, t_copied = 0, t_saved = 0;
    bool ticking, full, cow = false;
    unsigned i;

    if (e->inflight_epoch || !e->request_pending || e->cow_open) {
        return;
    }
    if (e->sock < 0) {
        slsvirt_fail_epochs(s);
        return;
    }

    /* After a redone window a request for the next epoch may still wait. */
    e->request_pending = e->redo_request;
    e->redo_request = false;
    epoch = e->next_epoch++;

    t0 = get_clock();
    if (e->last_capture_ns) {
        int64_t gap = t0 - e->last_capture_ns;

        e->interval_ewma_ns = e->interval_ewma_ns ?
                              (7 * e->interval_ewma_ns + gap) / 8 : gap;
    }
    e->last_capture_ns = t0;
    /*
     * A capture is a checkpoint whoever asked for it: the period counts
     * from here, so epochs forced by PERSIST stand in for periodic ones
     * instead of adding to them (and a persist never queues behind a
     * periodic epoch that a persist a moment ago made pointless).
     */
    if (s->period_ms) {
        timer_mod(e->period_timer,
                  qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + s->period_ms);
    }
    pause_all_vcpus();
    /*
     * Block requests in flight would complete into guest RAM after the cut
     * and are in no device's saved state: finish them first, as vm_stop()
     * does. Without block devices this costs nothing; with them the stop
     * includes the disk's latency for whatever was in flight.
     */
    bdrv_drain_all();
    t_paused = get_clock();
    /*
     * Freeze guest time for the pause, as vm_stop() would: the saved "timer"
     * section then holds absolute guest clock values (what a restore into a
     * new process needs), and the guest does not see the pause as lost time.
     */
    ticking = runstate_is_running();
    if (ticking) {
        cpu_disable_ticks();
    }

    full = e->need_full || !e->tracking;
    /* Cleared at the cut, not when the epoch is sent: a RELEASE during a
     * copy window asks for the next capture to be FULL again. Every path
     * that loses this epoch sets it again (slsvirt_fail_epochs). */
    e->need_full = false;
    if (!slsvirt_tracking_start(s, &err)) {
        goto resume;
    }
    if (full) {
        slsvirt_lazy_before_full(e);
    }
    slsvirt_dirty_sync(e);
    WITH_RCU_READ_LOCK_GUARD() {
        bool rearmed = slsvirt_kvm_epoch(e);

        for (i = 0; i < e->nr_blocks; i++) {
            dirty += slsvirt_harvest_block(&e->blocks[i], rearmed);
        }
    }
    memory_global_after_dirty_log_sync();
    /* Releases since the last cut belong to this epoch (FULL: already). */
    for (i = 0; i < e->nr_blocks; i++) {
        uint64_t added = slsvirt_take_released(&e->blocks[i]);

        dirty += full ? 0 : added;
    }
    /* ... and are written pages to a lazy restore (never from the store) */
    slsvirt_lazy_note_dirty(e);
    t_harvested = get_clock();

    /*
     * Copy after resuming (slsvirt_cow_copy_bh) unless the delta is large:
     * while a window is open the guest keeps dirtying at full speed, and a
     * delta the copier cannot finish within about a period only grows the
     * next one. Large deltas are copied while paused, which slows such a
     * guest down to what the store takes. FULL epochs always use a window:
     * copying all of RAM in the pause would stop the guest for seconds.
     */
    if (e->cow && (full || dirty <= s->cow_max_pages)) {
        cow = true;
    } else if (full) {
        for (i = 0; i < e->nr_blocks; i++) {
            SlsvirtRamBlock *b = &e->blocks[i];
            uint8_t *dst = e->staging + b->staging_offset;
            unsigned long p;

            if (e->lazy) {
                for (p = 0; p < b->length / SLS_PAGE_SIZE; p++) {
                    if (!slsvirt_lazy_copy_page(e, b, p,
                                                dst + p * SLS_PAGE_SIZE)) {
                        memcpy(dst + p * SLS_PAGE_SIZE,
                               b->host + p * SLS_PAGE_SIZE, SLS_PAGE_SIZE);
                    }
                }
                /* released pages: zero in staging */
                slsvirt_full_block(s, b, false);
            } else {
                slsvirt_full_block(s, b, true);
            }
            bitmap_zero(b->dirty, b->length / SLS_PAGE_SIZE);
        }
    } else {
        pages = g_new(uint64_t, MAX(dirty, 1));
        for (i = 0; i < e->nr_blocks; i++) {
            SlsvirtRamBlock *b = &e->blocks[i];
            unsigned long n = b->length / SLS_PAGE_SIZE;
            unsigned long p;

            slsvirt_zero_released(s, b, false);
            for (p = find_first_bit(b->dirty, n); p < n;
                 p = find_next_bit(b->dirty, n, p + 1)) {
                uint64_t off = (uint64_t)p * SLS_PAGE_SIZE;

                if (nr_pages == dirty) {
                    /* harvested bits are the only source: cannot happen */
                    error_setg(&err, "slsvirt: dirty page count changed "
                               "during capture");
                    goto resume;
                }
                /* Released pages are zero in staging already: listed. */
                if (!slsvirt_page_released(s, b, p) &&
                    slsvirt_copy_if_changed(e, b, off)) {
                    e->unchanged_pages++;
                    dirty--;
                    continue;
                }
                pages[nr_pages++] = cpu_to_le64((b->staging_offset + off) /
                                                SLS_PAGE_SIZE);
            }
            bitmap_zero(b->dirty, n);
        }
    }
    t_copied = get_clock();
    devstate = slsvirt_save_devices(&devstate_len, &err);
    t_saved = get_clock();
    if (devstate && cow) {
        slsvirt_cow_open(s, epoch, full, dirty, g_steal_pointer(&devstate),
                         devstate_len);
    }

resume:
    if (ticking) {
        cpu_enable_ticks();
    }
    resume_all_vcpus();
    stop_ns = get_clock() - t0;
    slsvirt_record_stop(e, stop_ns);
    trace_slsvirt_captured(epoch, full, cow ? dirty : nr_pages, stop_ns,
                           t_paused - t0, t_harvested - t_paused,
                           t_copied - t_harvested, t_saved - t_copied,
                           devstate_len);

    e->inflight_epoch = epoch;
    if (e->cow_open) {
        e->cow_stop_ns = stop_ns;
        e->cow_opened_ns = get_clock();
        qemu_bh_schedule(e->cow_bh);
        return;
    }
    if (!devstate) {
        slsvirt_set_error(e, "epoch %" PRIu64 ": %s", epoch,
                          error_get_pretty(err));
        error_free(err);
        if (cow) {
            slsvirt_clear_dirty(e);
        }
        slsvirt_fail_epochs(s);
        return;
    }
    slsvirt_send_epoch(s, epoch, full, stop_ns, devstate, devstate_len,
                       pages, nr_pages);
}

static void slsvirt_period_tick(void *opaque)
{
    SlsvirtState *s = opaque;
    SlsvirtEngine *e = &s->engine;
    int64_t now = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);

    if (!s->period_ms) {
        return;
    }
    timer_mod(e->period_timer, now + s->period_ms);
    /* A VM that has not started (e.g. waiting for sls-restore) or is
     * stopped changes nothing worth an epoch. */
    if (!runstate_is_running()) {
        return;
    }
    if (e->sock < 0) {
        slsvirt_schedule_reconnect(e);
        return;
    }
    if (e->request_pending) {
        /* Back-pressure: one capture in flight, one queued behind it. */
        e->ticks_skipped++;
        return;
    }
    e->request_pending = true;
    if (!e->inflight_epoch) {
        qemu_bh_schedule(e->capture_bh);
    }
}

void slsvirt_engine_set_period(SlsvirtState *s, uint32_t period_ms)
{
    SlsvirtEngine *e = &s->engine;

    s->period_ms = period_ms;
    if (period_ms) {
        timer_mod(e->period_timer,
                  qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + period_ms);
    } else {
        timer_del(e->period_timer);
    }
}

uint64_t slsvirt_engine_request(SlsvirtState *s, bool try_connect,
                                Error **errp)
{
    SlsvirtEngine *e = &s->engine;

    if (e->sock < 0) {
        if (try_connect) {
            if (!slsvirt_connect(s, errp)) {
                return 0;
            }
        } else {
            slsvirt_schedule_reconnect(e);
            error_setg(errp, "no store attached (hostd unreachable)");
            return 0;
        }
    }
    e->request_pending = true;
    if (!e->inflight_epoch) {
        qemu_bh_schedule(e->capture_bh);
    }
    /* A capture that is in flight already happened: the request needs the
     * next one. */
    return e->next_epoch;
}

/* ---- acks from hostd ------------------------------------------------- */

static void slsvirt_readable(void *opaque)
{
    SlsvirtState *s = opaque;
    SlsvirtEngine *e = &s->engine;
    Error *err = NULL;
    g_autofree uint8_t *payload = NULL;
    struct sls_msg_epoch_ack ack;
    uint32_t len;
    uint64_t epoch;
    int32_t status;

    payload = slsvirt_recv(s, SLS_MSG_EPOCH_ACK, sizeof(ack), &len, &err);
    if (!payload) {
        slsvirt_detach(s, err);
        return;
    }
    memcpy(&ack, payload, sizeof(ack));
    ack.message[sizeof(ack.message) - 1] = '\0';
    epoch = le64_to_cpu(ack.epoch);
    status = (int32_t)le32_to_cpu(ack.status);
    if (!e->inflight_epoch || epoch != e->inflight_epoch) {
        error_setg(&err, "slsvirt: hostd acked epoch %" PRIu64
                   " but %" PRIu64 " is in flight", epoch, e->inflight_epoch);
        slsvirt_detach(s, err);
        return;
    }

    e->inflight_epoch = 0;
    if (status == 0) {
        s->durable_epoch = epoch;
        e->parent_epoch = epoch;
        e->epochs_committed++;
        e->last_epoch_bytes = le64_to_cpu(ack.bytes_written);
        e->ack_ring[e->nr_acks++ % SLSVIRT_ACK_RING] = (SlsvirtAck) {
            .when_ns = qemu_clock_get_ns(QEMU_CLOCK_REALTIME),
            .bytes = e->last_epoch_bytes,
        };
    } else {
        s->failed_epoch = MAX(s->failed_epoch, epoch);
        e->epochs_failed++;
        e->need_full = true;
        slsvirt_set_error(e, "epoch %" PRIu64 " failed in hostd: %s (%d)",
                          epoch, ack.message, status);
    }
    trace_slsvirt_epoch_done(epoch, status);
    slsvirt_epoch_notify(s);
    /*
     * hostd is done with staging (it writes straight from it): give its
     * pages back, or a full capture leaves a copy of all of RAM there for
     * the life of the VM -- what each clone of an epoch would pay. After
     * the notification (PERSIST waiters need not wait for it), before the
     * next capture (a bottom half: it runs after this returns).
     */
    if (e->lazy && fallocate(e->staging_fd, FALLOC_FL_PUNCH_HOLE |
                             FALLOC_FL_KEEP_SIZE, 0, e->staging_size)) {
        warn_report_once("slsvirt: cannot release staging memory: %s",
                         strerror(errno));
    }
    if (e->request_pending) {
        qemu_bh_schedule(e->capture_bh);
    }
}

/* ---- restore --------------------------------------------------------- */

static bool slsvirt_load_devices(const uint8_t *buf, size_t len, Error **errp)
{
    QIOChannelBuffer *bioc = qio_channel_buffer_new(len);
    QEMUFile *f;
    int ret = -EINVAL;

    memcpy(bioc->data, buf, len);
    bioc->usage = len;
    qio_channel_set_name(QIO_CHANNEL(bioc), "slsvirt-devstate");
    f = qemu_file_new_input(QIO_CHANNEL(bioc));
    object_unref(OBJECT(bioc));

    if (qemu_get_be32(f) != QEMU_VM_FILE_MAGIC ||
        qemu_get_be32(f) != QEMU_VM_FILE_VERSION) {
        error_setg(errp, "slsvirt: device state has a bad header");
        goto out;
    }
    cpu_synchronize_all_pre_loadvm();
    ret = qemu_load_device_state(f);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "slsvirt: loading device state failed");
    }
out:
    qemu_fclose(f);
    return ret == 0;
}

/*
 * A new instance of saved state: software in the guest that keeps random
 * state or unique IDs must see that it is not the original (clones of one
 * epoch run the same memory). Any value but the saved one will do; a
 * random one keeps clones apart.
 */
static void slsvirt_new_generation(SlsvirtState *s)
{
    uint64_t old = s->generation, gen;

    do {
        gen = ((uint64_t)g_random_int() << 32) | g_random_int();
    } while (gen == old || !gen);
    s->generation = gen;
}

static uint64_t slsvirt_engine_restore(SlsvirtState *s, uint64_t epoch,
                                       bool lazy, const char *source,
                                       const char *working_set, Error **errp)
{
    SlsvirtEngine *e = &s->engine;
    struct sls_msg_restore req = {
        .epoch = cpu_to_le64(epoch),
        .flags = cpu_to_le64((lazy ? SLS_RESTORE_F_LAZY : 0) |
                             (source ? SLS_RESTORE_F_SOURCE : 0)),
    };
    struct sls_msg_restore_ack ack;
    g_autofree uint8_t *reply = NULL;
    uint32_t len, devstate_len;
    uint64_t restored;
    Error *err = NULL;
    int fds[SLS_LAZY_MAX_FILES];
    int nr_fds = 0, k;
    unsigned i;

    if (runstate_is_running()) {
        error_setg(errp, "sls-restore needs a VM that has not run: start "
                   "QEMU with -S");
        return 0;
    }
    if (source && (!*source || strlen(source) >= SLS_NAME_LEN)) {
        error_setg(errp, "sls-restore: 'source' must be a VM name shorter "
                   "than %d bytes", SLS_NAME_LEN);
        return 0;
    }
    if (working_set && !lazy) {
        error_setg(errp, "sls-restore: 'working-set' needs 'lazy'");
        return 0;
    }
    if (e->lazy) {
        error_setg(errp, "sls-restore: this VM was restored already");
        return 0;
    }
    if (!slsvirt_connect_wait(s, errp)) {
        return 0;
    }
    if (e->inflight_epoch || e->request_pending) {
        error_setg(errp, "sls-restore: a checkpoint is in progress");
        return 0;
    }
    if (source) {
        pstrcpy(req.source_vm, sizeof(req.source_vm), source);
    }

    /* Synchronous exchange: the VM is not running. */
    qemu_set_fd_handler(e->sock, NULL, NULL, NULL);
    if (!slsvirt_send(s, SLS_MSG_RESTORE, &req, sizeof(req), -1, &err)) {
        goto detach;
    }
    reply = slsvirt_recv_fds(s, SLS_MSG_RESTORE_ACK, sizeof(ack), &len, fds,
                             &nr_fds, &err);
    if (!reply) {
        goto detach;
    }
    memcpy(&ack, reply, sizeof(ack));
    ack.message[sizeof(ack.message) - 1] = '\0';
    devstate_len = le32_to_cpu(ack.devstate_len);
    restored = le64_to_cpu(ack.epoch);
    qemu_set_fd_handler(e->sock, slsvirt_readable, NULL, s);
    if (ack.status) {
        error_setg(errp, "sls-restore: hostd: %s (%d)", ack.message,
                   (int32_t)le32_to_cpu(ack.status));
        goto close_fds;
    }
    if (devstate_len != len - sizeof(ack) || !restored ||
        (lazy ? !nr_fds : nr_fds)) {
        error_setg(&err, "sls-restore: malformed reply from hostd");
        goto detach;
    }

    if (lazy) {
        /* Takes the fds over, closes them on failure too. */
        /* A restore from another store is a clone's: its RAM image is
         * shared with the other clones of the epoch. */
        if (!slsvirt_lazy_start(s, restored, fds, nr_fds, working_set,
                                source != NULL, errp)) {
            return 0;
        }
        /*
         * Track writes from the first instruction on: a page the guest has
         * not written since is the epoch's, and a capture takes it from the
         * store rather than pulling it in (slsvirt_lazy_copy_page). Every
         * page starts dirty (RAM allocation): forget that.
         */
        if (!slsvirt_tracking_start(s, errp)) {
            return 0;
        }
        slsvirt_dirty_sync(e);
        WITH_RCU_READ_LOCK_GUARD() {
            bool rearmed = slsvirt_kvm_epoch(e);

            for (i = 0; i < e->nr_blocks; i++) {
                slsvirt_harvest_block(&e->blocks[i], rearmed);
            }
        }
        memory_global_after_dirty_log_sync();
        slsvirt_clear_dirty(e);
    } else {
        for (i = 0; i < e->nr_blocks; i++) {
            SlsvirtRamBlock *b = &e->blocks[i];

            memcpy(qemu_ram_get_host_addr(b->rb),
                   e->staging + b->staging_offset,
                   qemu_ram_get_max_length(b->rb));
        }
    }
    /* Staging held the image or the page map: give the memory back (the
     * map was all hostd wrote for a lazy restore). */
    if (fallocate(e->staging_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  0, lazy ? slsvirt_lazy_map_bytes(e) : e->staging_size)) {
        warn_report("slsvirt: could not release the staging area: %s",
                    strerror(errno));
    }
    if (!slsvirt_load_devices(reply + sizeof(ack), devstate_len, errp)) {
        return 0;
    }
    /*
     * Device post_load handlers may read guest RAM, so RAM was filled
     * first -- including pages the restored state has released (zeros in
     * a FULL epoch's image). Give those back to the host again now.
     */
    slsvirt_mem_discard_released(s);

    /* The restored state is epoch @restored itself: it is durable (in the
     * source's store, for a clone). Guest waiters that were blocked in
     * PERSIST when it was captured wake once the VM runs. */
    s->durable_epoch = restored;
    e->parent_epoch = restored;
    e->restored_epoch = restored;
    e->need_full = true;
    e->next_epoch = MAX(e->next_epoch, restored + 1);
    e->notify_on_run = true;
    slsvirt_new_generation(s);
    trace_slsvirt_restored(restored, devstate_len);
    return restored;

detach:
    error_propagate(errp, error_copy(err));
    slsvirt_detach(s, err);
close_fds:
    for (k = 0; k < nr_fds; k++) {
        close(fds[k]);
    }
    return 0;
}

static void slsvirt_vm_state_change(void *opaque, bool running,
                                    RunState state)
{
    SlsvirtState *s = opaque;

    if (running && s->engine.notify_on_run) {
        s->engine.notify_on_run = false;
        slsvirt_epoch_notify(s);
    }
}

static void slsvirt_attach_bh(void *opaque)
{
    SlsvirtState *s = opaque;
    Error *err = NULL;

    if (!slsvirt_connect_wait(s, &err)) {
        slsvirt_set_error(&s->engine, "%s (checkpoints unavailable until "
                          "hostd answers)", error_get_pretty(err));
        error_free(err);
    }
    slsvirt_engine_set_period(s, s->period_ms);
}

/*
 * The machine's own init-done notifiers (pc_machine_done: ACPI tables and
 * other ROM blocks) may run after ours, so the RAM layout is read only once
 * they all have: from a bottom half. Every process of a VM -- first boot or
 * restore, first connect or reconnect -- then sees the same set of blocks.
 */
static void slsvirt_machine_ready(Notifier *n, void *data)
{
    Object *obj = object_resolve_path_type("", TYPE_SLSVIRT_PCI, NULL);

    if (obj) {
        aio_bh_schedule_oneshot(qemu_get_aio_context(), slsvirt_attach_bh,
                                SLSVIRT_PCI(obj));
    }
}

void slsvirt_engine_init(SlsvirtState *s)
{
    SlsvirtEngine *e = &s->engine;

    e->sock = -1;
    e->staging_fd = -1;
    e->next_epoch = 1;
    /* Not a guarded BH: the capture does no DMA into our own registers, and
     * pause_all_vcpus() drops the BQL, so vCPUs must be able to finish
     * their register accesses meanwhile. */
    e->capture_bh = qemu_bh_new(slsvirt_capture_bh, s);
    e->cow_bh = qemu_bh_new(slsvirt_cow_copy_bh, s);
    /* Writes are seen before they land only under TCG (notdirty_write)
     * and qtest (no vCPUs: only QEMU's own writes): with KVM the vCPUs
     * write RAM directly, so pages are copied while they are paused. */
    e->cow = s->copy_before_write && (tcg_enabled() || qtest_enabled());
    e->reconnect_timer = timer_new_ns(QEMU_CLOCK_REALTIME, slsvirt_reconnect,
                                      s);
    e->period_timer = timer_new_ms(QEMU_CLOCK_REALTIME, slsvirt_period_tick, s);
    slsvirt_vmse = qemu_add_vm_change_state_handler(slsvirt_vm_state_change,
                                                    s);
    /* RAM blocks (ROMs, ACPI tables) keep appearing until the machine is
     * done: lay out the staging area and say hello only then. */
    slsvirt_machine_done.notify = slsvirt_machine_ready;
    qemu_add_machine_init_done_notifier(&slsvirt_machine_done);
}

void slsvirt_engine_cleanup(SlsvirtState *s)
{
    SlsvirtEngine *e = &s->engine;

    qemu_remove_machine_init_done_notifier(&slsvirt_machine_done);
    qemu_del_vm_change_state_handler(slsvirt_vmse);
    if (e->sock >= 0) {
        qemu_set_fd_handler(e->sock, NULL, NULL, NULL);
        close(e->sock);
        e->sock = -1;
    }
    slsvirt_cow_abort(e);
    slsvirt_lazy_free(e);
    slsvirt_tracking_stop(s);
    timer_free(e->reconnect_timer);
    timer_free(e->period_timer);
    for (unsigned i = 0; i < e->nr_blocks; i++) {
        g_free(e->blocks[i].dirty);
        g_free(e->blocks[i].cow_claim);
        g_free(e->blocks[i].cow_done);
        g_free(e->blocks[i].cow_same);
    }
    qemu_bh_delete(e->capture_bh);
    qemu_bh_delete(e->cow_bh);
    if (e->staging) {
        qemu_memfd_free(e->staging, e->staging_size, e->staging_fd);
    }
    g_free(e->last_error);
}

/* ---- QMP ------------------------------------------------------------- */

SlsvirtState *slsvirt_find(Error **errp)
{
    bool ambiguous = false;
    Object *obj = object_resolve_path_type("", TYPE_SLSVIRT_PCI, &ambiguous);

    if (!obj) {
        error_setg(errp, ambiguous ? "more than one slsvirt-pci device"
                                   : "no slsvirt-pci device in this VM");
        return NULL;
    }
    return SLSVIRT_PCI(obj);
}

SlsCheckpoint *qmp_sls_checkpoint(Error **errp)
{
    SlsvirtState *s = slsvirt_find(errp);
    SlsCheckpoint *ret;
    uint64_t epoch;

    if (!s) {
        return NULL;
    }
    epoch = slsvirt_engine_request(s, true, errp);
    if (!epoch) {
        return NULL;
    }
    ret = g_new0(SlsCheckpoint, 1);
    ret->epoch = epoch;
    return ret;
}

SlsCheckpoint *qmp_sls_restore(bool has_epoch, uint64_t epoch,
                               bool has_lazy, bool lazy, const char *source,
                               const char *working_set, Error **errp)
{
    SlsvirtState *s = slsvirt_find(errp);
    SlsCheckpoint *ret;
    uint64_t restored;

    if (!s) {
        return NULL;
    }
    restored = slsvirt_engine_restore(s, has_epoch ? epoch : 0,
                                      has_lazy && lazy, source, working_set,
                                      errp);
    if (!restored) {
        return NULL;
    }
    ret = g_new0(SlsCheckpoint, 1);
    ret->epoch = restored;
    return ret;
}

void qmp_sls_start(uint32_t period_ms, Error **errp)
{
    SlsvirtState *s = slsvirt_find(errp);

    if (!s) {
        return;
    }
    if (!period_ms || period_ms > SLSVIRT_MAX_PERIOD_MS) {
        error_setg(errp, "period-ms must be 1..%d", SLSVIRT_MAX_PERIOD_MS);
        return;
    }
    if (!slsvirt_connect(s, errp)) {
        return;
    }
    slsvirt_engine_set_period(s, period_ms);
}

void qmp_sls_stop(Error **errp)
{
    SlsvirtState *s = slsvirt_find(errp);

    if (s) {
        slsvirt_engine_set_period(s, 0);
    }
}

static int slsvirt_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Stop-time percentiles over the last SLSVIRT_STOP_RING captures. */
static void slsvirt_stop_percentiles(SlsvirtEngine *e, SlsInfo *info)
{
    size_t n = MIN(e->nr_stops, SLSVIRT_STOP_RING);
    g_autofree uint64_t *v = NULL;

    if (!n) {
        return;
    }
    v = g_memdup2(e->stop_ring, n * sizeof(uint64_t));
    qsort(v, n, sizeof(uint64_t), slsvirt_cmp_u64);
    info->stop_p50_ns = v[(n - 1) / 2];
    info->stop_p99_ns = v[(n - 1) * 99 / 100];
}

/* Epochs and bytes made durable during the last second. */
static void slsvirt_rates(SlsvirtEngine *e, SlsInfo *info)
{
    int64_t now = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
    size_t n = MIN(e->nr_acks, SLSVIRT_ACK_RING), i;
    uint64_t epochs = 0, bytes = 0;

    for (i = 0; i < n; i++) {
        const SlsvirtAck *a = &e->ack_ring[(e->nr_acks - 1 - i) %
                                           SLSVIRT_ACK_RING];

        if (now - a->when_ns > NANOSECONDS_PER_SECOND) {
            break;
        }
        epochs++;
        bytes += a->bytes;
    }
    info->epochs_per_s = epochs;
    info->write_bandwidth = bytes;
}

SlsInfo *qmp_query_sls(Error **errp)
{
    SlsvirtState *s = slsvirt_find(errp);
    SlsvirtEngine *e;
    SlsInfo *info;
    SlsHistogramBucketList **tail;
    unsigned i;

    if (!s) {
        return NULL;
    }
    e = &s->engine;
    info = g_new0(SlsInfo, 1);
    info->vm = g_strdup(s->vm_name);
    info->connected = e->sock >= 0;
    info->state = e->inflight_epoch ? SLS_STATE_WRITING :
                  e->request_pending ? SLS_STATE_CAPTURING : SLS_STATE_IDLE;
    info->current_epoch = e->next_epoch;
    info->durable_epoch = s->durable_epoch;
    info->failed_epoch = s->failed_epoch;
    info->epochs_committed = e->epochs_committed;
    info->epochs_failed = e->epochs_failed;
    info->last_stop_ns = e->last_stop_ns;
    info->max_stop_ns = e->max_stop_ns;
    info->total_stop_ns = e->total_stop_ns;
    info->last_epoch_bytes = e->last_epoch_bytes;
    info->bad_accesses = s->bad_accesses;
    info->last_error = g_strdup(e->last_error ? e->last_error : "");
    info->period_ms = s->period_ms;
    info->effective_period_ms = e->interval_ewma_ns / SCALE_MS;
    info->tracking = e->tracking;
    info->epochs_full = e->epochs_full;
    info->ticks_skipped = e->ticks_skipped;
    info->last_epoch_pages = e->last_epoch_pages;
    info->backlog = (e->inflight_epoch != 0) + e->request_pending;
    info->copy_before_write = e->cow;
    info->last_copy_ns = e->last_copy_ns;
    info->cow_pages = e->cow_pages_total;
    info->cow_writer_copies = e->cow_writer_copies;
    info->unchanged_pages = e->unchanged_pages;
    info->cow_retries = e->cow_retries;
    info->cow_epochs = e->cow_epochs;
    info->dirty_tracking = slsvirt_dirty_tracking(e);
    slsvirt_stop_percentiles(e, info);
    slsvirt_rates(e, info);
    tail = &info->stop_histogram;
    for (i = 0; i <= SLSVIRT_HIST_BUCKETS; i++) {
        SlsHistogramBucket *b;

        if (!e->stop_hist[i]) {
            continue;
        }
        b = g_new0(SlsHistogramBucket, 1);
        b->le_us = i < SLSVIRT_HIST_BUCKETS ? (1ull << i) : UINT64_MAX;
        b->count = e->stop_hist[i];
        QAPI_LIST_APPEND(tail, b);
    }
    return info;
}
