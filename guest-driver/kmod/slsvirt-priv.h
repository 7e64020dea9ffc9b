/* SPDX-License-Identifier: GPL-2.0 */
/*
 * slsvirt.ko internals shared by slsvirt-main.c (PCI driver, /dev/slsvirt,
 * PERSIST) and slsvirt-mem.c (memory elasticity).
 */
#ifndef SLSVIRT_PRIV_H
#define SLSVIRT_PRIV_H

#include <linux/kref.h>
#include <linux/list.h>
#include <linux/miscdevice.h>
#include <linux/mutex.h>
#include <linux/notifier.h>
#include <linux/pci.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include <slsvirt/hw.h>

#define DRV_NAME "slsvirt"

struct shrinker;

/*
 * Memory elasticity (SLSVIRT_F_MEMORY). The driver follows the host's target
 * by taking free pages from the page allocator ("chunks", high orders first)
 * and releasing them to the host; applications release pages of elastic
 * regions (mmap of /dev/slsvirt) themselves.
 *
 * Locking: lock protects everything below it and the descriptor array; it
 * nests inside mmap_lock and a region's lock, and outside cmd_lock. Nothing
 * allocates memory while holding it (the shrinker only trylocks it).
 */
struct slsvirt_mem {
	bool enabled;
	struct mutex lock;
	struct slsvirt_mem_desc *desc;	/* SLSVIRT_MEM_MAX_DESC entries */
	dma_addr_t desc_dma;
	struct list_head chunks;	/* head page's lru; order in page_private */
	u64 chunk_pages;		/* pages in chunks (all released) */
	u64 region_pages;		/* pages released in elastic regions */
	struct list_head regions;
	/* host policy as last read (for the shrinker, which reads no register) */
	u64 ram_pages;
	u64 ceiling_pages;
	u64 shrinker_pages;		/* given back under pressure, in total */
	bool inflating;			/* the worker is allocating: shrinker keeps off */
	bool held_off;			/* pressure gave pages back: no inflating until
					 * the host sets its policy again */
	struct work_struct work;	/* follow the target (vector SLSVIRT_VEC_MEM) */
	struct delayed_work stats_work;	/* MEM_GUEST_FREE/USED about once a second */
	struct shrinker *shrinker;
	struct notifier_block oom_nb;
};

struct slsvirt_dev {
	struct kref ref;
	struct pci_dev *pdev;
	void __iomem *regs;		/* valid while !gone; access under cmd_lock or from the IRQ */
	struct miscdevice misc;

	/*
	 * cmd_lock serialises a doorbell with the read of its result (hw.h
	 * contract) and every register access from process context against
	 * removal: whoever holds it and sees !gone may touch regs.
	 */
	struct mutex cmd_lock;
	bool gone;			/* written under cmd_lock and epoch_lock */

	/* Epoch progress as last read from the device; under epoch_lock. */
	spinlock_t epoch_lock;
	u64 durable_epoch;
	u64 failed_epoch;
	u64 generation;			/* SLSVIRT_REG_GENERATION (has_generation) */
	bool has_generation;		/* set at probe */
	wait_queue_head_t epoch_wq;
	atomic_t irq_count;		/* interrupts seen; tells a lost one from a late one */

	/*
	 * Tickets queued on all open files. While there are any, poll_work
	 * re-reads the epoch registers every SLSVIRT_POLL_INTERVAL, the
	 * lost-interrupt net for poll()ers (sync waiters have their own).
	 */
	atomic_t async_pending;
	struct delayed_work poll_work;
	struct slsvirt_mem mem;
};


/* slsvirt-mem.c */
void slsvirt_mem_init(struct slsvirt_dev *sdev);
int slsvirt_mem_probe(struct slsvirt_dev *sdev, u32 features);
void slsvirt_mem_remove(struct slsvirt_dev *sdev);
void slsvirt_mem_irq(struct slsvirt_dev *sdev);
long slsvirt_mem_ioctl(struct slsvirt_dev *sdev, unsigned int cmd, void __user *uarg);
int slsvirt_mem_mmap(struct slsvirt_dev *sdev, struct file *file,
		     struct vm_area_struct *vma);

#endif /* SLSVIRT_PRIV_H */
