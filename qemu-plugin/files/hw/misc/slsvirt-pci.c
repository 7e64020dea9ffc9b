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
 * Copyright (c) 2026 The slsvirt authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/log.h"
#include "qemu/module.h"
#include "qapi/error.h"
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
            return SLSVIRT_F_PERSIST | SLSVIRT_F_GENERATION;
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
        }
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

    if (addr != SLSVIRT_REG_CMD || size != 4) {
        slsvirt_bad_access(s, "write to read-only or unknown register",
                           addr, size, val);
        return;
    }

    switch (val) {
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

static SlsvirtState *slsvirt_instance;

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
    if (msix_init_exclusive_bar(pdev, SLSVIRT_MSIX_VECTORS, SLSVIRT_BAR_MSIX,
                                errp)) {
        return;
    }
    msix_vector_use(pdev, SLSVIRT_VEC_EPOCH);

    slsvirt_engine_init(s);
    slsvirt_instance = s;
}

static void slsvirt_exit(PCIDevice *pdev)
{
    SlsvirtState *s = SLSVIRT_PCI(pdev);

    slsvirt_engine_cleanup(s);
    msix_uninit_exclusive_bar(pdev);
    slsvirt_instance = NULL;
}

static void slsvirt_reset(DeviceState *dev)
{
    SlsvirtState *s = SLSVIRT_PCI(dev);

    /* Epoch numbers are the store's, not the guest's: they survive reset. */
    s->cmd_status = SLSVIRT_ST_OK;
    s->target_epoch = 0;
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

static const VMStateDescription vmstate_slsvirt = {
    .name = "slsvirt-pci",
    .version_id = 1,
    .minimum_version_id = 1,
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
