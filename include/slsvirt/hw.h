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
 *
 * Memory elasticity (SLSVIRT_F_MEMORY): the guest gives pages of its main
 * RAM back to the host and takes them back, in batches of ranges.
 *  - A page is 4 KiB (SLSVIRT_MEM_PAGE_SIZE). SLSVIRT_REG_MEM_RAM_PAGES is
 *    the size of the machine's main RAM in pages: the most that can be in
 *    use. Only guest-physical ranges backed by that RAM can be released --
 *    never ROM, device memory, MMIO or holes.
 *  - A batch is an array of struct slsvirt_mem_desc in guest RAM: its
 *    guest-physical address goes to SLSVIRT_REG_MEM_DESC_ADDR (16-byte
 *    aligned, written as one 8-byte access or two 4-byte halves, low half
 *    first), the number of entries (1..SLSVIRT_MEM_MAX_DESC) to
 *    SLSVIRT_REG_MEM_DESC_COUNT; the array may cross pages but must lie
 *    wholly in guest RAM. Each entry's gpa and len are multiples of the page
 *    size, len > 0, and gpa + len must not wrap. The device copies the array
 *    once at the doorbell: changing it afterwards has no effect.
 *  - SLSVIRT_CMD_RELEASE: every page of every range is handed to the host
 *    (its host memory is freed at once). A page already released, or listed
 *    twice in the batch, makes the batch fail with SLSVIRT_ST_BAD_RANGE.
 *    Until reclaimed, the guest must not touch a released page: it reads as
 *    zero or as garbage, and a write to it may be lost (by a restore).
 *  - SLSVIRT_CMD_RECLAIM: every page of every range must be released; it
 *    becomes the guest's again and reads as zero. A reclaim that would leave
 *    more than SLSVIRT_REG_MEM_CEILING_PAGES pages in use (RAM_PAGES -
 *    RELEASED_PAGES) fails with SLSVIRT_ST_OVER_CEILING.
 *  - A batch is all or nothing: on any error nothing is applied, and
 *    SLSVIRT_REG_MEM_DONE holds the index of the first bad entry (0 when
 *    the array itself is bad: SLSVIRT_ST_INVALID). On success MEM_DONE is
 *    the number of entries applied (= the count). Exception: after
 *    SLSVIRT_ST_BUSY from RELEASE nothing is marked released, but the
 *    contents of the batch's ranges are undefined (the guest gave them up).
 *  - SLSVIRT_REG_MEM_TARGET_PAGES is how many pages the host asks the guest
 *    to have released; when the host sets it (or the ceiling) the device
 *    raises MSI-X vector SLSVIRT_VEC_MEM. The guest follows it as best it
 *    can; the ceiling, not the target, is what the host enforces.
 *  - SLSVIRT_REG_MEM_GUEST_FREE / _USED are the guest's own account of its
 *    memory (free pages in its allocator; pages in use, not counting the
 *    released ones), written by the driver (8-byte access or two 4-byte
 *    halves, low half first) whenever it changes its released set and about
 *    once a second. The host only displays them: they are the guest's
 *    claim, never trusted for anything. Reset to 0 (= not reported).
 *  - Released pages stay released across checkpoints, restores and
 *    migration (device state); a device reset (guest reboot) forgets them:
 *    the new guest owns all of RAM again (those pages read as zero).
 */
#ifndef SLSVIRT_HW_H
#define SLSVIRT_HW_H

#include <linux/types.h>	/* __le64: kernel, QEMU and guest tools alike */

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

/* Memory elasticity (SLSVIRT_F_MEMORY). Counts are in 4 KiB pages. */
#define SLSVIRT_REG_MEM_DESC_ADDR	0x100	/* RW 64: GPA of the descriptor array */
#define SLSVIRT_REG_MEM_DESC_COUNT	0x108	/* RW 32: entries in it */
#define SLSVIRT_REG_MEM_DONE		0x10c	/* RO 32: see the protocol above */
#define SLSVIRT_REG_MEM_RAM_PAGES	0x110	/* RO 64: main RAM, in pages */
#define SLSVIRT_REG_MEM_RELEASED_PAGES	0x118	/* RO 64: pages released now */
#define SLSVIRT_REG_MEM_TARGET_PAGES	0x120	/* RO 64: pages the host wants released */
#define SLSVIRT_REG_MEM_CEILING_PAGES	0x128	/* RO 64: most pages the guest may use */
#define SLSVIRT_REG_MEM_GUEST_FREE	0x130	/* RW 64: guest-reported free pages */
#define SLSVIRT_REG_MEM_GUEST_USED	0x138	/* RW 64: guest-reported used pages */

/* SLSVIRT_REG_FEATURES bits */
#define SLSVIRT_F_PERSIST		(1u << 0)
#define SLSVIRT_F_MEMORY		(1u << 1)	/* RELEASE/RECLAIM, MEM_* registers */
#define SLSVIRT_F_GENERATION		(1u << 2)	/* SLSVIRT_REG_GENERATION */

/* SLSVIRT_REG_STATUS bits */
#define SLSVIRT_STATUS_CHECKPOINTING	(1u << 0)	/* a host store is attached */

/* Commands */
#define SLSVIRT_CMD_NONE		0
#define SLSVIRT_CMD_PERSIST		1
#define SLSVIRT_CMD_RELEASE		2	/* give the batch's ranges to the host */
#define SLSVIRT_CMD_RECLAIM		3	/* take them back (zero-filled) */

/* Command status */
#define SLSVIRT_ST_OK			0
#define SLSVIRT_ST_INVALID		1	/* unknown command or bad access */
#define SLSVIRT_ST_NOT_CHECKPOINTING	2	/* no store attached: persist impossible */
#define SLSVIRT_ST_BAD_RANGE		3	/* entry MEM_DONE: unaligned, empty, wraps,
						 * not main RAM, already released
						 * (RELEASE) or not released (RECLAIM) */
#define SLSVIRT_ST_OVER_CEILING		4	/* RECLAIM would exceed MEM_CEILING_PAGES */
#define SLSVIRT_ST_BUSY			5	/* the host cannot free memory now
						 * (discard disabled, e.g. by VFIO) */

/* MSI-X vectors */
#define SLSVIRT_VEC_EPOCH		0	/* durable/failed epoch or generation changed */
#define SLSVIRT_VEC_MEM			1	/* MEM_TARGET/CEILING_PAGES set */
#define SLSVIRT_MSIX_VECTORS		2

/* Memory elasticity: one entry of the descriptor array (little endian). */
#define SLSVIRT_MEM_PAGE_SIZE		4096
#define SLSVIRT_MEM_MAX_DESC		256
#define SLSVIRT_MEM_DESC_ALIGN		16

struct slsvirt_mem_desc {
	__le64 gpa;		/* guest-physical start, page aligned */
	__le64 len;		/* bytes, page aligned, > 0 */
};

#endif /* SLSVIRT_HW_H */
