/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * slsvirt-pci device register layout: the contract between the QEMU device
 * (qemu-plugin/) and the guest driver (guest-driver/).
 *
 * PCI identity: vendor 0x1af4 (Red Hat, Inc.), device 0x10f0 -- from the
 * 1af4:10f0..10ff range left free for experimental devices -- revision
 * SLSVIRT_HW_REVISION, class 0x0580 (memory controller, other).
 *
 * BAR0: 4 KiB of 32/64-bit little-endian MMIO registers (below).
 * BAR1: MSI-X table and PBA, SLSVIRT_MSIX_VECTORS vectors.
 *
 * Protocol: the guest writes a command code to SLSVIRT_REG_CMD. The device
 * handles it synchronously: SLSVIRT_REG_CMD_STATUS holds the result and, for
 * PERSIST, SLSVIRT_REG_TARGET_EPOCH the epoch that will cover every guest
 * write made before the doorbell. When an epoch becomes durable (or fails)
 * the device updates SLSVIRT_REG_DURABLE_EPOCH / SLSVIRT_REG_FAILED_EPOCH
 * and raises MSI-X vector SLSVIRT_VEC_EPOCH. A doorbell and the read of its
 * result must not be interleaved with another doorbell (the driver holds a
 * lock across them).
 *
 * Everything the guest writes is validated; a bad access sets CMD_STATUS
 * to an error and is logged (LOG_GUEST_ERROR), never trusted.
 */
#ifndef SLSVIRT_HW_H
#define SLSVIRT_HW_H

#define SLSVIRT_PCI_VENDOR_ID		0x1af4
#define SLSVIRT_PCI_DEVICE_ID		0x10f0
#define SLSVIRT_PCI_REVISION		0x01
#define SLSVIRT_PCI_CLASS		0x0580

#define SLSVIRT_HW_MAGIC		0x56534c53u	/* "SLSV" little-endian */
#define SLSVIRT_HW_VERSION		1

#define SLSVIRT_BAR_REGS		0
#define SLSVIRT_BAR_MSIX		1
#define SLSVIRT_REGS_SIZE		0x1000

/* Registers (offsets in BAR0). 64-bit registers may be read as one 8-byte
 * access or as two 4-byte halves (low half first latches nothing: the
 * driver reads the 8-byte form). */
#define SLSVIRT_REG_MAGIC		0x00	/* RO 32: SLSVIRT_HW_MAGIC */
#define SLSVIRT_REG_VERSION		0x04	/* RO 32: SLSVIRT_HW_VERSION */
#define SLSVIRT_REG_FEATURES		0x08	/* RO 32: SLSVIRT_F_* */
#define SLSVIRT_REG_STATUS		0x0c	/* RO 32: SLSVIRT_STATUS_* */
#define SLSVIRT_REG_CMD			0x10	/* WO 32: doorbell, SLSVIRT_CMD_* */
#define SLSVIRT_REG_CMD_STATUS		0x14	/* RO 32: SLSVIRT_ST_* of last command */
#define SLSVIRT_REG_TARGET_EPOCH	0x18	/* RO 64: epoch of last PERSIST */
#define SLSVIRT_REG_DURABLE_EPOCH	0x20	/* RO 64: newest durable epoch */
#define SLSVIRT_REG_FAILED_EPOCH	0x28	/* RO 64: newest epoch that failed */
#define SLSVIRT_REG_CURRENT_EPOCH	0x30	/* RO 64: epoch the next capture gets */
#define SLSVIRT_REG_BAD_ACCESSES	0x38	/* RO 32: count of rejected accesses */
#define SLSVIRT_REG_GENERATION		0x40	/* RO 64: instance generation, below */

/*
 * SLSVIRT_REG_GENERATION changes whenever this VM becomes a new instance of
 * saved state: it is restored from an epoch, or started as a clone of one.
 * Several clones of one epoch run the same memory image, so software that
 * keeps random state or unique IDs must regenerate them when it changes
 * (the device raises SLSVIRT_VEC_EPOCH when it does, with the guest
 * running). The value is opaque: compare it, do not order it.
 */

/* SLSVIRT_REG_FEATURES bits */
#define SLSVIRT_F_PERSIST		(1u << 0)
#define SLSVIRT_F_GENERATION		(1u << 1)	/* SLSVIRT_REG_GENERATION */

/* SLSVIRT_REG_STATUS bits */
#define SLSVIRT_STATUS_CHECKPOINTING	(1u << 0)	/* a host store is attached */

/* Commands */
#define SLSVIRT_CMD_NONE		0
#define SLSVIRT_CMD_PERSIST		1

/* Command status */
#define SLSVIRT_ST_OK			0
#define SLSVIRT_ST_INVALID		1	/* unknown command or bad access */
#define SLSVIRT_ST_NOT_CHECKPOINTING	2	/* no store attached: persist impossible */

/* MSI-X vectors */
#define SLSVIRT_VEC_EPOCH		0	/* durable/failed epoch or generation changed */
#define SLSVIRT_MSIX_VECTORS		1

#endif /* SLSVIRT_HW_H */
