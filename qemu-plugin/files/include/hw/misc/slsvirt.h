/*
 * slsvirt: paravirtual persistence device and its checkpoint engine
 *
 * Copyright (c) 2026 The slsvirt authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef HW_MISC_SLSVIRT_H
#define HW_MISC_SLSVIRT_H

#include "hw/pci/pci_device.h"
#include "qom/object.h"
#include "slsvirt/hw.h"
#include "slsvirt/proto.h"

#define TYPE_SLSVIRT_PCI "slsvirt-pci"
OBJECT_DECLARE_SIMPLE_TYPE(SlsvirtState, SLSVIRT_PCI)

typedef struct SlsvirtRamBlock {
    RAMBlock *rb;
    uint8_t *host;              /* the block's memory in QEMU */
    ram_addr_t ram_offset;      /* the block's ram_addr_t base */
    uint64_t length;            /* bytes captured: the block's max_length */
    uint64_t staging_offset;
    unsigned long *dirty;       /* pages written since the last capture;
                                 * while a copy window is open: the pages
                                 * of the epoch being copied */
    unsigned long *cow_claim;   /* copy window: page taken by a copier */
    unsigned long *cow_done;    /* copy window: page is in staging */
    unsigned long *cow_same;    /* copy window: page equals its staging
                                 * copy (set before cow_done) */
    unsigned long *released;    /* pages released since the last cut: the
                                 * next epoch lists them (as zero pages) */
} SlsvirtRamBlock;

#define SLSVIRT_STOP_RING       4096    /* stop times kept for percentiles */
#define SLSVIRT_HIST_BUCKETS    24      /* stop-time histogram, log2 of us */
#define SLSVIRT_ACK_RING        1024    /* recent acks, for rates */
#define SLSVIRT_MAX_PERIOD_MS   1000    /* back-pressure never stretches
                                         * the period beyond this */

typedef struct SlsvirtAck {
    int64_t when_ns;            /* QEMU_CLOCK_REALTIME */
    uint64_t bytes;
} SlsvirtAck;

typedef struct SlsvirtLazy SlsvirtLazy;

/* Engine state: host-side only, never migrated. Owned by the main loop (BQL). */
typedef struct SlsvirtEngine {
    int sock;                   /* connection to hostd, -1 when detached */
    uint64_t tx_seq;
    uint8_t *staging;           /* shared with hostd (memfd) */
    size_t staging_size;
    int staging_fd;
    unsigned nr_blocks;
    SlsvirtRamBlock blocks[SLS_MAX_RAM_BLOCKS];

    uint64_t next_epoch;        /* epoch the next capture gets */
    uint64_t inflight_epoch;    /* captured, waiting for hostd; 0 = none */
    uint64_t parent_epoch;      /* newest epoch this VM's state descends from */
    bool request_pending;       /* a persist request waits for a capture */
    bool redo_request;          /* ... and waits behind a redone epoch */
    bool need_full;             /* next capture copies every page */
    bool tracking;              /* our dirty tracking is on */
    bool kvm_epoch_off;         /* KVM_SLS_EPOCH_HARVEST failed: stock from now on */
    Error *migration_blocker;
    QEMUTimer *period_timer;
    uint32_t effective_period_ms;
    bool notify_on_run;         /* raise the epoch vector when the VM runs */
    QEMUBH *capture_bh;

    /*
     * Copy-before-write (TCG): the stop only harvests the dirty set and
     * saves device state; the pages are copied into staging after the
     * vCPUs resume, by cow_bh in the main loop, and by whoever writes a
     * page of the epoch first (the RAM write hook, include/exec/memory.h).
     */
    bool cow;                   /* this engine copies after resuming */
    bool cow_open;              /* a copy window is open */
    QEMUBH *cow_bh;
    uint64_t cow_epoch;
    bool cow_full;
    unsigned cow_block;         /* copier's cursor */
    unsigned long cow_page;
    uint8_t *cow_devstate;
    size_t cow_devstate_len;
    uint64_t *cow_pages;        /* page list of a delta, in copier order */
    uint64_t cow_nr_pages, cow_max_pages;
    int64_t cow_stop_ns;
    int64_t cow_opened_ns;
    uint64_t cow_vcpu_copies;   /* this window: pages copied by a writer */
    bool cow_missed;            /* this window: a write bypassed the hook */
    QEMUTimer *reconnect_timer;
    int64_t last_connect_ns;
    bool busy;                  /* hostd said -EBUSY to the last HELLO */

    /* statistics, reported by query-sls */
    uint64_t epochs_committed;
    uint64_t epochs_failed;
    uint64_t last_stop_ns;
    uint64_t max_stop_ns;
    uint64_t total_stop_ns;
    uint64_t last_epoch_bytes;
    uint64_t last_epoch_pages;
    uint64_t epochs_full;
    uint64_t ticks_skipped;
    uint64_t cow_pages_total;   /* pages copied after resuming */
    uint64_t unchanged_pages;   /* dirty pages left out: same bytes as
                                 * their newest copy in the store */
    uint64_t cow_writer_copies; /* ... of which by a write to the page */
    uint64_t cow_retries;       /* windows redone because a write bypassed */
    uint64_t cow_epochs;        /* epochs copied in a window, not paused */
    int64_t last_copy_ns;       /* last copy window, resume to all copied */
    int64_t last_capture_ns;    /* get_clock() at the last capture */
    int64_t interval_ewma_ns;   /* smoothed time between captures */
    uint64_t stop_ring[SLSVIRT_STOP_RING];
    uint64_t nr_stops;
    uint64_t stop_hist[SLSVIRT_HIST_BUCKETS + 1];
    SlsvirtAck ack_ring[SLSVIRT_ACK_RING];
    uint64_t nr_acks;
    char *last_error;

    uint64_t restored_epoch;    /* epoch this process was restored from */
    SlsvirtLazy *lazy;          /* lazy restore serving faults, or NULL */
} SlsvirtEngine;

/*
 * Memory elasticity (SLSVIRT_F_MEMORY): which pages of the machine's main
 * RAM the guest has released. Only that one RAM block can be released, so
 * the "per block" bitmap is a single one; page i is offset i * 4 KiB in it.
 * Guest-visible state (migrated in a subsection); owned by the BQL.
 */
typedef struct SlsvirtMem {
    bool enabled;               /* SLSVIRT_F_MEMORY offered */
    MemoryRegion *ram;          /* MACHINE(qdev_get_machine())->ram */
    RAMBlock *rb;
    uint64_t ram_pages;
    int32_t nbits;              /* = ram_pages, for VMSTATE_BITMAP */
    unsigned long *released;
    uint64_t released_pages;    /* bits set in @released */
    uint64_t target_pages;      /* the host asks for this many released */
    uint64_t ceiling_pages;     /* the guest may use at most this many */
    uint64_t desc_addr;         /* SLSVIRT_REG_MEM_DESC_ADDR */
    uint32_t desc_count;
    uint32_t done;              /* SLSVIRT_REG_MEM_DONE */
    /* guest-reported (MEM_GUEST_FREE/USED): displayed, never trusted;
     * not migrated (the driver writes them again within a second) */
    uint64_t guest_free;
    uint64_t guest_used;
    /* statistics (query-sls-mem), not migrated */
    uint64_t releases;          /* RELEASE batches applied */
    uint64_t reclaims;
} SlsvirtMem;

struct SlsvirtState {
    PCIDevice parent_obj;
    MemoryRegion mmio;

    /* properties */
    char *vm_name;
    char *socket_path;
    uint32_t period_ms;         /* 0: checkpoints only on request */
    bool copy_before_write;     /* copy pages after resuming (TCG only) */
    uint32_t cow_max_pages;     /* ... for deltas of at most this many pages */
    bool memory;                /* offer SLSVIRT_F_MEMORY (and its vector) */

    /* guest-visible registers (migrated) */
    uint32_t cmd_status;
    uint32_t bad_accesses;
    uint64_t target_epoch;
    uint64_t durable_epoch;
    uint64_t failed_epoch;
    uint64_t generation;        /* SLSVIRT_REG_GENERATION; 0 until restored */

    SlsvirtMem mem;
    SlsvirtEngine engine;
};

/* slsvirt-engine.c */
void slsvirt_engine_init(SlsvirtState *s);
void slsvirt_engine_cleanup(SlsvirtState *s);
bool slsvirt_engine_connected(SlsvirtState *s);
/* Queue a capture covering every write so far; returns the epoch that will
 * cover it, or 0 with @errp set when no store is attached. */
uint64_t slsvirt_engine_request(SlsvirtState *s, bool try_connect,
                                Error **errp);
/* Start (period_ms > 0) or stop continuous checkpointing. */
void slsvirt_engine_set_period(SlsvirtState *s, uint32_t period_ms);
/* Called by the device when an epoch became durable or failed. */
void slsvirt_epoch_notify(SlsvirtState *s);
/* The VM's slsvirt-pci device, or NULL with @errp set. */
SlsvirtState *slsvirt_find(Error **errp);

/* slsvirt-restore.c: lazy restore (userfaultfd) */
/* Serve RAM from hostd's page map in staging and the chain's segment fds
 * (taken over, closed on failure too); @working_set: prefetch list or NULL;
 * @image_shared: other VMs map the same RAM image file (clones). */
bool slsvirt_lazy_start(SlsvirtState *s, uint64_t epoch, const int *fds,
                        int nr_fds, const char *working_set,
                        bool image_shared, Error **errp);
/* Is @rb served by a lazy restore? */
bool slsvirt_lazy_serves(SlsvirtEngine *e, RAMBlock *rb);
/* RELEASE of lazily served RAM: 0 = not lazy, 1 = done, -errno. */
int slsvirt_lazy_discard(SlsvirtEngine *e, RAMBlock *rb, uint64_t off,
                         uint64_t len);
void slsvirt_lazy_free(SlsvirtEngine *e);
uint64_t slsvirt_lazy_map_bytes(SlsvirtEngine *e);
/* Capture helpers: see slsvirt-restore.c. */
bool slsvirt_lazy_copy_page(SlsvirtEngine *e, SlsvirtRamBlock *b,
                            unsigned long page, uint8_t *dst);
void slsvirt_lazy_before_full(SlsvirtEngine *e);
void slsvirt_lazy_note_dirty(SlsvirtEngine *e);

/* The guest released pages: their bytes changed without dirty tracking
 * (discard), so the next capture is FULL. */
void slsvirt_engine_mem_released(SlsvirtState *s, RAMBlock *rb,
                                 uint64_t first, uint64_t npages);

/* slsvirt-pci.c: memory elasticity */
/* After a restore loaded RAM and device state: free the pages the restored
 * state says are released (RAM was just filled from the epoch image). */
void slsvirt_mem_discard_released(SlsvirtState *s);
/* @b's released bitmap (pages of @b), or NULL when none of it is released. */
const unsigned long *slsvirt_mem_released_of(SlsvirtState *s, RAMBlock *rb,
                                             uint64_t *nbits);

#endif
