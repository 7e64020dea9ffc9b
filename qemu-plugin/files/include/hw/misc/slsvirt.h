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
    uint64_t length;            /* bytes captured: the block's max_length */
    uint64_t staging_offset;
} SlsvirtRamBlock;

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
    bool notify_on_run;         /* raise the epoch vector when the VM runs */
    QEMUBH *capture_bh;
    QEMUTimer *reconnect_timer;
    int64_t last_connect_ns;

    /* statistics, reported by query-sls */
    uint64_t epochs_committed;
    uint64_t epochs_failed;
    uint64_t last_stop_ns;
    uint64_t max_stop_ns;
    uint64_t total_stop_ns;
    uint64_t last_epoch_bytes;
    char *last_error;
} SlsvirtEngine;

struct SlsvirtState {
    PCIDevice parent_obj;
    MemoryRegion mmio;

    /* properties */
    char *vm_name;
    char *socket_path;

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
/* Called by the device when an epoch became durable or failed. */
void slsvirt_epoch_notify(SlsvirtState *s);

#endif
