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
} SlsvirtEngine;

struct SlsvirtState {
    PCIDevice parent_obj;
    MemoryRegion mmio;

    /* properties */
    char *vm_name;
    char *socket_path;
    uint32_t period_ms;         /* 0: checkpoints only on request */
    bool copy_before_write;     /* copy pages after resuming (TCG only) */
    uint32_t cow_max_pages;     /* ... for deltas of at most this many pages */

    /* guest-visible registers (migrated) */
    uint32_t cmd_status;
    uint32_t bad_accesses;
    uint64_t target_epoch;
    uint64_t durable_epoch;
    uint64_t failed_epoch;

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

#endif
