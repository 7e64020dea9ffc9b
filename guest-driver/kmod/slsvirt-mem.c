// SPDX-License-Identifier: GPL-2.0
/*
 * slsvirt: memory elasticity (SLSVIRT_F_MEMORY, include/slsvirt/hw.h).
 *
 * Two users give guest pages to the host and take them back through the
 * RELEASE/RECLAIM doorbells, one doorbell per batch of up to
 * SLSVIRT_MEM_MAX_DESC ranges:
 *
 *  - The driver follows the host's target (MEM_TARGET_PAGES, and the
 *    ceiling: never more than MEM_CEILING_PAGES in use). To shrink it takes
 *    free pages from the page allocator, highest orders first (a 4 MiB chunk
 *    is one range), releases them and keeps them on a list; to grow it
 *    reclaims and frees them. They stay in the guest's managed memory (as
 *    virtio-balloon's deflate-on-OOM pages do): the guest may have them back
 *    under pressure, so MemTotal and overcommit limits do not shrink. A shrinker
 *    and an OOM notifier give chunks back under memory pressure (as far as
 *    the ceiling allows), so the guest does not run out of memory because of
 *    us; after that the driver does not take memory again until the host
 *    sets its target again.
 *
 *  - Applications map elastic regions (mmap of /dev/slsvirt) and release or
 *    reclaim page ranges of them (SLSVIRT_IOC_MEM_RELEASE/RECLAIM). A region
 *    owns its pages; they are mapped one pfn at a time on fault (VM_PFNMAP,
 *    so nothing can pin them with get_user_pages), under the region's lock,
 *    which RELEASE holds while it unmaps and releases: a released page can
 *    never stay mapped.
 *
 * The device's released bitmap and this driver's lists live in the same
 * checkpoint: a restore brings both back consistently.
 */

#include <linux/bitmap.h>
#include <linux/dma-mapping.h>
#include <linux/gfp.h>
#include <linux/io.h>
#include <linux/io-64-nonatomic-lo-hi.h>
#include <linux/list_sort.h>
#include <linux/mm.h>
#include <linux/oom.h>
#include <linux/shrinker.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/vmstat.h>

#include <linux/slsvirt.h>
#include <slsvirt/hw.h>

#include "slsvirt-priv.h"

/* Pages taken for the target: no emergency reserves, no OOM, no warnings. */
#define SLSVIRT_MEM_GFP	(GFP_HIGHUSER | __GFP_NOMEMALLOC | __GFP_NORETRY | __GFP_NOWARN)

/* Given back per OOM notification (1 MiB), as virtio-balloon does. */
#define SLSVIRT_MEM_OOM_PAGES	256

/* How often the guest's free/used figures are reported to the host. */
#define SLSVIRT_MEM_STATS_INTERVAL	(HZ)

static_assert(PAGE_SIZE == SLSVIRT_MEM_PAGE_SIZE);

/* An elastic region: one mmap() of /dev/slsvirt. */
struct slsvirt_region {
	struct kref ref;		/* one per vma mapping it */
	struct slsvirt_dev *sdev;
	struct list_head node;		/* in mem.regions, under mem.lock */
	struct mutex lock;		/* pages, released; mapping changes */
	unsigned long npages;
	unsigned long nreleased;	/* bits set in @released */
	unsigned long *released;
	struct page **pages;		/* NULL until first touched */
};

struct slsvirt_mem_policy {
	u64 ram, released, target, ceiling;
};

static int slsvirt_mem_read_policy(struct slsvirt_dev *sdev,
				   struct slsvirt_mem_policy *p)
{
	mutex_lock(&sdev->cmd_lock);
	if (sdev->gone) {
		mutex_unlock(&sdev->cmd_lock);
		return -ENODEV;
	}
	p->ram = readq(sdev->regs + SLSVIRT_REG_MEM_RAM_PAGES);
	p->released = readq(sdev->regs + SLSVIRT_REG_MEM_RELEASED_PAGES);
	p->target = readq(sdev->regs + SLSVIRT_REG_MEM_TARGET_PAGES);
	p->ceiling = readq(sdev->regs + SLSVIRT_REG_MEM_CEILING_PAGES);
	mutex_unlock(&sdev->cmd_lock);
	WRITE_ONCE(sdev->mem.ceiling_pages, p->ceiling);
	return 0;
}

/* Pages that may still be reclaimed before the ceiling is reached. */
static u64 slsvirt_mem_room(const struct slsvirt_mem_policy *p)
{
	u64 in_use = p->ram - min(p->released, p->ram);

	return p->ceiling > in_use ? p->ceiling - in_use : 0;
}

/* Append [gpa, gpa + len) to the array, merged with the last entry when they
 * touch. False when the array is full. Caller holds mem.lock. */
static bool slsvirt_mem_desc_add(struct slsvirt_mem *m, unsigned int *n,
				 phys_addr_t gpa, u64 len)
{
	if (*n) {
		struct slsvirt_mem_desc *d = &m->desc[*n - 1];

		if (le64_to_cpu(d->gpa) + le64_to_cpu(d->len) == gpa) {
			d->len = cpu_to_le64(le64_to_cpu(d->len) + len);
			return true;
		}
	}
	if (*n == SLSVIRT_MEM_MAX_DESC)
		return false;
	m->desc[*n].gpa = cpu_to_le64(gpa);
	m->desc[*n].len = cpu_to_le64(len);
	(*n)++;
	return true;
}

/* One doorbell for the first @n descriptors. Caller holds mem.lock. */
static int slsvirt_mem_doorbell(struct slsvirt_dev *sdev, u32 cmd, unsigned int n)
{
	u32 status, done;

	lockdep_assert_held(&sdev->mem.lock);
	if (!n)
		return 0;
	mutex_lock(&sdev->cmd_lock);
	if (sdev->gone) {
		mutex_unlock(&sdev->cmd_lock);
		return -ENODEV;
	}
	writeq(sdev->mem.desc_dma, sdev->regs + SLSVIRT_REG_MEM_DESC_ADDR);
	writel(n, sdev->regs + SLSVIRT_REG_MEM_DESC_COUNT);
	writel(cmd, sdev->regs + SLSVIRT_REG_CMD);
	status = readl(sdev->regs + SLSVIRT_REG_CMD_STATUS);
	done = readl(sdev->regs + SLSVIRT_REG_MEM_DONE);
	mutex_unlock(&sdev->cmd_lock);

	switch (status) {
	case SLSVIRT_ST_OK:
		return 0;
	case SLSVIRT_ST_OVER_CEILING:
		return -ENOSPC;
	case SLSVIRT_ST_BUSY:
		return -EBUSY;
	default:
		/* Our bookkeeping and the device's disagree: a bug, say so. */
		dev_warn_ratelimited(&sdev->pdev->dev,
				     "%s of %u ranges refused: status %u at entry %u\n",
				     cmd == SLSVIRT_CMD_RELEASE ? "RELEASE" : "RECLAIM",
				     n, status, done);
		return -EIO;
	}
}

/*
 * Tell the host what the guest has free and in use (its claim, displayed):
 * the driver's chunks are neither (they are the host's now).
 */
static void slsvirt_mem_report(struct slsvirt_dev *sdev)
{
	u64 held = READ_ONCE(sdev->mem.chunk_pages) + READ_ONCE(sdev->mem.region_pages);
	struct sysinfo si;
	u64 used;

	si_meminfo(&si);
	used = si.totalram - min_t(u64, si.freeram, si.totalram);
	used -= min(used, held);
	mutex_lock(&sdev->cmd_lock);
	if (!sdev->gone) {
		writeq(si.freeram, sdev->regs + SLSVIRT_REG_MEM_GUEST_FREE);
		writeq(used, sdev->regs + SLSVIRT_REG_MEM_GUEST_USED);
	}
	mutex_unlock(&sdev->cmd_lock);
}

static int slsvirt_mem_chunk_cmp(void *priv, const struct list_head *a,
				 const struct list_head *b)
{
	unsigned long pa = page_to_pfn(list_entry(a, struct page, lru));
	unsigned long pb = page_to_pfn(list_entry(b, struct page, lru));

	return pa < pb ? -1 : pa > pb;
}

static void slsvirt_mem_free_chunks(struct list_head *list)
{
	struct page *page, *tmp;

	list_for_each_entry_safe(page, tmp, list, lru) {
		unsigned int order = page_private(page);

		list_del(&page->lru);
		set_page_private(page, 0);
		__free_pages(page, order);
	}
}

/*
 * Take up to @want pages from the allocator and release them, in batches of
 * at most SLSVIRT_MEM_MAX_DESC chunks (one doorbell each). Allocates outside
 * mem.lock: allocation may reclaim, and reclaim may call our shrinker.
 * Returns the pages released.
 */
static u64 slsvirt_mem_inflate(struct slsvirt_dev *sdev, u64 want)
{
	struct slsvirt_mem *m = &sdev->mem;
	unsigned int order = MAX_PAGE_ORDER;
	u64 done = 0;
	int ret = 0;

	while (done < want && !ret && !READ_ONCE(m->held_off)) {
		LIST_HEAD(batch);
		unsigned int chunks = 0, n = 0;
		struct page *page;
		u64 pages = 0;

		WRITE_ONCE(m->inflating, true);
		while (done + pages < want && chunks < SLSVIRT_MEM_MAX_DESC) {
			while (order && (1ULL << order) > want - done - pages)
				order--;
			page = alloc_pages(SLSVIRT_MEM_GFP, order);
			if (!page) {
				if (!order)
					break;
				order--;	/* and stay lower for this run */
				continue;
			}
			set_page_private(page, order);
			list_add_tail(&page->lru, &batch);
			chunks++;
			pages += 1ULL << order;
		}
		WRITE_ONCE(m->inflating, false);
		if (!chunks)
			break;

		list_sort(NULL, &batch, slsvirt_mem_chunk_cmp);
		mutex_lock(&m->lock);
		list_for_each_entry(page, &batch, lru)
			slsvirt_mem_desc_add(m, &n, page_to_phys(page),
					     PAGE_SIZE << page_private(page));
		ret = slsvirt_mem_doorbell(sdev, SLSVIRT_CMD_RELEASE, n);
		if (!ret) {
			list_splice_init(&batch, &m->chunks);
			m->chunk_pages += pages;
			done += pages;
		}
		mutex_unlock(&m->lock);
		/* After BUSY nothing is released: the pages are the guest's again. */
		slsvirt_mem_free_chunks(&batch);
		cond_resched();
	}
	return done;
}

/*
 * Reclaim up to @want pages of chunks and give them to the allocator,
 * splitting a chunk larger than what is left to give. The caller keeps
 * @want within the ceiling. Caller holds mem.lock. Returns the pages given.
 */
static u64 slsvirt_mem_deflate_locked(struct slsvirt_dev *sdev, u64 want)
{
	struct slsvirt_mem *m = &sdev->mem;
	struct page *page;
	u64 done = 0;

	lockdep_assert_held(&m->lock);
	while (done < want && !list_empty(&m->chunks)) {
		LIST_HEAD(batch);
		unsigned int n = 0;
		u64 pages = 0;

		while (done + pages < want && !list_empty(&m->chunks)) {
			unsigned int order, i;

			page = list_first_entry(&m->chunks, struct page, lru);
			order = page_private(page);
			if ((1ULL << order) > want - done - pages) {
				/* The pieces go back at the head, lowest first. */
				list_del(&page->lru);
				split_page(page, order);
				for (i = 1U << order; i-- > 0;) {
					set_page_private(page + i, 0);
					list_add(&page[i].lru, &m->chunks);
				}
				continue;
			}
			if (!slsvirt_mem_desc_add(m, &n, page_to_phys(page),
						  PAGE_SIZE << order))
				break;
			list_move_tail(&page->lru, &batch);
			pages += 1ULL << order;
		}
		if (slsvirt_mem_doorbell(sdev, SLSVIRT_CMD_RECLAIM, n)) {
			list_splice(&batch, &m->chunks);
			break;
		}
		m->chunk_pages -= pages;
		done += pages;
		slsvirt_mem_free_chunks(&batch);
	}
	return done;
}

/* Follow the host's policy: runs on SLSVIRT_VEC_MEM and when regions change. */
static void slsvirt_mem_work(struct work_struct *work)
{
	struct slsvirt_mem *m = container_of(work, struct slsvirt_mem, work);
	struct slsvirt_dev *sdev = container_of(m, struct slsvirt_dev, mem);
	struct slsvirt_mem_policy p;
	u64 goal, mine, have;

	if (slsvirt_mem_read_policy(sdev, &p))
		return;
	goal = max(p.target, p.ram > p.ceiling ? p.ram - p.ceiling : 0);

	mutex_lock(&m->lock);
	mine = goal > m->region_pages ? goal - m->region_pages : 0;
	have = m->chunk_pages;
	if (have > mine)
		slsvirt_mem_deflate_locked(sdev, min(have - mine, slsvirt_mem_room(&p)));
	mutex_unlock(&m->lock);
	if (have < mine)
		slsvirt_mem_inflate(sdev, mine - have);
	slsvirt_mem_report(sdev);
	dev_dbg(&sdev->pdev->dev, "target %llu ceiling %llu: driver holds %llu, regions %llu pages\n",
		p.target, p.ceiling, m->chunk_pages, m->region_pages);
}

static void slsvirt_mem_stats_work(struct work_struct *work)
{
	struct slsvirt_mem *m = container_of(to_delayed_work(work),
					     struct slsvirt_mem, stats_work);
	struct slsvirt_dev *sdev = container_of(m, struct slsvirt_dev, mem);

	slsvirt_mem_report(sdev);
	if (!READ_ONCE(sdev->gone))
		schedule_delayed_work(&m->stats_work, SLSVIRT_MEM_STATS_INTERVAL);
}

/* Give back up to @want pages under memory pressure; mem.lock held. */
static u64 slsvirt_mem_give_back_locked(struct slsvirt_dev *sdev, u64 want)
{
	struct slsvirt_mem_policy p;
	u64 freed;

	if (slsvirt_mem_read_policy(sdev, &p))
		return 0;
	freed = slsvirt_mem_deflate_locked(sdev, min(want, slsvirt_mem_room(&p)));
	if (freed) {
		sdev->mem.shrinker_pages += freed;
		WRITE_ONCE(sdev->mem.held_off, true);
	}
	return freed;
}

static unsigned long slsvirt_mem_shrink_count(struct shrinker *shrinker,
					      struct shrink_control *sc)
{
	struct slsvirt_dev *sdev = shrinker->private_data;
	struct slsvirt_mem *m = &sdev->mem;
	struct slsvirt_mem_policy p = {
		.ram = m->ram_pages,
		.released = READ_ONCE(m->chunk_pages) + READ_ONCE(m->region_pages),
		.ceiling = READ_ONCE(m->ceiling_pages),
	};
	u64 n;

	if (READ_ONCE(m->inflating))
		return 0;
	n = min(READ_ONCE(m->chunk_pages), slsvirt_mem_room(&p));
	return n ? n : SHRINK_EMPTY;
}

static unsigned long slsvirt_mem_shrink_scan(struct shrinker *shrinker,
					     struct shrink_control *sc)
{
	struct slsvirt_dev *sdev = shrinker->private_data;
	u64 freed;

	/* Never wait for the worker: it may be the one reclaiming. */
	if (READ_ONCE(sdev->mem.inflating) || !mutex_trylock(&sdev->mem.lock))
		return SHRINK_STOP;
	freed = slsvirt_mem_give_back_locked(sdev, sc->nr_to_scan);
	mutex_unlock(&sdev->mem.lock);
	return freed ? freed : SHRINK_STOP;
}

static int slsvirt_mem_oom_notify(struct notifier_block *nb, unsigned long dummy,
				  void *parm)
{
	struct slsvirt_mem *m = container_of(nb, struct slsvirt_mem, oom_nb);
	struct slsvirt_dev *sdev = container_of(m, struct slsvirt_dev, mem);
	unsigned long *freed = parm;

	if (!mutex_trylock(&m->lock))
		return NOTIFY_OK;
	*freed += slsvirt_mem_give_back_locked(sdev, SLSVIRT_MEM_OOM_PAGES);
	mutex_unlock(&m->lock);
	return NOTIFY_OK;
}

void slsvirt_mem_irq(struct slsvirt_dev *sdev)
{
	/* A new target or ceiling: the host has spoken again. */
	WRITE_ONCE(sdev->mem.held_off, false);
	schedule_work(&sdev->mem.work);
}

static irqreturn_t slsvirt_mem_irq_handler(int irq, void *data)
{
	slsvirt_mem_irq(data);
	return IRQ_HANDLED;
}

/* ---- elastic regions --------------------------------------------------- */

/* Mark [from, to) of @r released or not; mem.lock held. */
static void slsvirt_region_mark(struct slsvirt_region *r, bool release,
				unsigned long from, unsigned long to)
{
	struct slsvirt_mem *m = &r->sdev->mem;
	unsigned long i;

	for (i = from; i < to; i++) {
		if (release)
			__set_bit(i, r->released);
		else
			__clear_bit(i, r->released);
		if (r->pages[i]) {
			if (release)
				m->region_pages++;
			else
				m->region_pages--;
		}
	}
	if (release)
		r->nreleased += to - from;
	else
		r->nreleased -= to - from;
}

/*
 * RELEASE or RECLAIM pages [first, first + n) of @r (all in the opposite
 * state), in page order, one doorbell per SLSVIRT_MEM_MAX_DESC runs. Pages
 * never touched have nothing to give: they only change state. *@applied is
 * the number of pages from @first that changed state. Caller holds r->lock
 * and mem.lock.
 */
static int slsvirt_region_apply(struct slsvirt_region *r, bool release,
				unsigned long first, unsigned long n,
				unsigned long *applied)
{
	struct slsvirt_dev *sdev = r->sdev;
	struct slsvirt_mem *m = &sdev->mem;
	u32 cmd = release ? SLSVIRT_CMD_RELEASE : SLSVIRT_CMD_RECLAIM;
	unsigned long i, from = first;
	unsigned int nd = 0;
	int ret = 0;

	for (i = first; i < first + n; i++) {
		phys_addr_t gpa;

		if (!r->pages[i])
			continue;
		gpa = page_to_phys(r->pages[i]);
		if (slsvirt_mem_desc_add(m, &nd, gpa, PAGE_SIZE))
			continue;
		ret = slsvirt_mem_doorbell(sdev, cmd, nd);
		if (ret)
			goto out;
		slsvirt_region_mark(r, release, from, i);
		from = i;
		nd = 0;
		slsvirt_mem_desc_add(m, &nd, gpa, PAGE_SIZE);
	}
	ret = slsvirt_mem_doorbell(sdev, cmd, nd);
	if (!ret) {
		slsvirt_region_mark(r, release, from, first + n);
		from = first + n;
	}
out:
	*applied = from - first;
	return ret;
}

static void slsvirt_region_free(struct kref *ref)
{
	struct slsvirt_region *r = container_of(ref, struct slsvirt_region, ref);
	struct slsvirt_dev *sdev = r->sdev;
	struct slsvirt_mem *m = &sdev->mem;
	unsigned long i, applied = 0;
	int ret = 0;

	mutex_lock(&m->lock);
	list_del(&r->node);
	if (r->nreleased) {
		unsigned long from = find_first_bit(r->released, r->npages);

		/* Reclaim released runs; what the ceiling refuses, the driver keeps. */
		while (from < r->npages && !ret) {
			unsigned long to = find_next_zero_bit(r->released, r->npages, from);

			ret = slsvirt_region_apply(r, false, from, to - from, &applied);
			from = find_next_bit(r->released, r->npages, from + applied);
		}
		for (i = 0; i < r->npages; i++) {
			if (!test_bit(i, r->released) || !r->pages[i])
				continue;
			/* Still released: the driver holds it like a chunk. */
			set_page_private(r->pages[i], 0);
			list_add(&r->pages[i]->lru, &m->chunks);
			m->chunk_pages++;
			m->region_pages--;
			r->pages[i] = NULL;
		}
	}
	mutex_unlock(&m->lock);
	if (ret)
		schedule_work(&m->work);	/* may reclaim them once the ceiling allows */

	for (i = 0; i < r->npages; i++)
		if (r->pages[i])
			__free_page(r->pages[i]);
	kvfree(r->pages);
	bitmap_free(r->released);
	kfree(r);
}

static void slsvirt_region_open(struct vm_area_struct *vma)
{
	struct slsvirt_region *r = vma->vm_private_data;

	kref_get(&r->ref);
}

static void slsvirt_region_close(struct vm_area_struct *vma)
{
	struct slsvirt_region *r = vma->vm_private_data;

	kref_put(&r->ref, slsvirt_region_free);
}

/* A region is one whole mapping: no partial munmap/mprotect. */
static int slsvirt_region_may_split(struct vm_area_struct *vma, unsigned long addr)
{
	return -EINVAL;
}

static vm_fault_t slsvirt_region_fault(struct vm_fault *vmf)
{
	struct slsvirt_region *r = vmf->vma->vm_private_data;
	unsigned long idx = vmf->pgoff;
	struct page *page;
	vm_fault_t ret;

	if (idx >= r->npages)
		return VM_FAULT_SIGBUS;
	mutex_lock(&r->lock);
	if (test_bit(idx, r->released)) {
		ret = VM_FAULT_SIGBUS;
		goto out;
	}
	page = r->pages[idx];
	if (!page) {
		page = alloc_page(GFP_HIGHUSER | __GFP_ZERO);
		if (!page) {
			ret = VM_FAULT_OOM;
			goto out;
		}
		r->pages[idx] = page;
	}
	/* Installed under r->lock: RELEASE unmaps under it too. */
	ret = vmf_insert_pfn(vmf->vma, vmf->address, page_to_pfn(page));
out:
	mutex_unlock(&r->lock);
	return ret;
}

static const struct vm_operations_struct slsvirt_region_ops = {
	.open		= slsvirt_region_open,
	.close		= slsvirt_region_close,
	.may_split	= slsvirt_region_may_split,
	.fault		= slsvirt_region_fault,
};

int slsvirt_mem_mmap(struct slsvirt_dev *sdev, struct file *file,
		     struct vm_area_struct *vma)
{
	struct slsvirt_mem *m = &sdev->mem;
	unsigned long npages = vma_pages(vma);
	struct slsvirt_region *r;

	if (!m->enabled)
		return -EOPNOTSUPP;
	if (READ_ONCE(sdev->gone))
		return -ENODEV;
	if (!(vma->vm_flags & VM_SHARED) || vma->vm_pgoff || !npages ||
	    npages > m->ram_pages)
		return -EINVAL;

	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (!r)
		return -ENOMEM;
	r->pages = kvcalloc(npages, sizeof(*r->pages), GFP_KERNEL);
	r->released = bitmap_zalloc(npages, GFP_KERNEL);
	if (!r->pages || !r->released) {
		kvfree(r->pages);
		bitmap_free(r->released);
		kfree(r);
		return -ENOMEM;
	}
	kref_init(&r->ref);
	mutex_init(&r->lock);
	r->sdev = sdev;
	r->npages = npages;
	mutex_lock(&m->lock);
	list_add(&r->node, &m->regions);
	mutex_unlock(&m->lock);

	vm_flags_set(vma, VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP | VM_DONTCOPY);
	vma->vm_ops = &slsvirt_region_ops;
	vma->vm_private_data = r;
	return 0;
}

static long slsvirt_mem_ioctl_range(struct slsvirt_dev *sdev, bool release,
				    struct slsvirt_mem_range __user *uarg)
{
	struct slsvirt_mem *m = &sdev->mem;
	struct mm_struct *mm = current->mm;
	struct slsvirt_mem_range req;
	struct vm_area_struct *vma;
	unsigned long first, n, applied = 0;
	struct slsvirt_region *r;
	size_t i;
	long ret;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	/* done is 0 for every refusal; a read-only argument fails first. */
	if (put_user(0ULL, &uarg->done))
		return -EFAULT;
	if (req.flags || req.reserved0)
		return -EINVAL;
	for (i = 0; i < ARRAY_SIZE(req.reserved); i++)
		if (req.reserved[i])
			return -EINVAL;
	if (!m->enabled)
		return -EOPNOTSUPP;
	if (!req.len || (req.addr | req.len) & ~PAGE_MASK ||
	    req.addr + req.len < req.addr)
		return -EINVAL;

	if (mmap_read_lock_killable(mm))
		return -EINTR;
	vma = vma_lookup(mm, req.addr);
	if (!vma || vma->vm_ops != &slsvirt_region_ops ||
	    req.addr + req.len > vma->vm_end) {
		ret = -EINVAL;
		goto out_mm;
	}
	r = vma->vm_private_data;
	first = vma->vm_pgoff + ((req.addr - vma->vm_start) >> PAGE_SHIFT);
	n = req.len >> PAGE_SHIFT;

	mutex_lock(&r->lock);
	/* All pages must be in the other state: nothing is applied otherwise. */
	if (release ? find_next_bit(r->released, first + n, first) < first + n :
		      find_next_zero_bit(r->released, first + n, first) < first + n) {
		ret = -EINVAL;
		goto out_region;
	}
	if (release)
		zap_vma_ptes(vma, req.addr, req.len);
	mutex_lock(&m->lock);
	ret = slsvirt_region_apply(r, release, first, n, &applied);
	mutex_unlock(&m->lock);
out_region:
	mutex_unlock(&r->lock);
out_mm:
	mmap_read_unlock(mm);
	if (applied)
		schedule_work(&m->work);	/* the driver's share of the target changed */
	if (put_user((u64)applied << PAGE_SHIFT, &uarg->done))
		return -EFAULT;
	return ret;
}

static long slsvirt_mem_ioctl_info(struct slsvirt_dev *sdev,
				   struct slsvirt_mem_info __user *uarg)
{
	struct slsvirt_mem *m = &sdev->mem;
	struct slsvirt_mem_policy p;
	struct slsvirt_mem_info info;
	size_t i;
	int ret;

	if (copy_from_user(&info, uarg, sizeof(info)))
		return -EFAULT;
	if (info.flags || info.reserved0)
		return -EINVAL;
	for (i = 0; i < ARRAY_SIZE(info.reserved); i++)
		if (info.reserved[i])
			return -EINVAL;
	if (!m->enabled)
		return -EOPNOTSUPP;
	ret = slsvirt_mem_read_policy(sdev, &p);
	if (ret)
		return ret;

	info.ram = p.ram << PAGE_SHIFT;
	info.released = p.released << PAGE_SHIFT;
	info.target_released = p.target << PAGE_SHIFT;
	info.ceiling = p.ceiling << PAGE_SHIFT;
	mutex_lock(&m->lock);
	info.driver_released = m->chunk_pages << PAGE_SHIFT;
	info.region_released = m->region_pages << PAGE_SHIFT;
	info.shrinker_reclaimed = m->shrinker_pages << PAGE_SHIFT;
	mutex_unlock(&m->lock);
	return copy_to_user(uarg, &info, sizeof(info)) ? -EFAULT : 0;
}

long slsvirt_mem_ioctl(struct slsvirt_dev *sdev, unsigned int cmd, void __user *uarg)
{
	switch (cmd) {
	case SLSVIRT_IOC_MEM_RELEASE:
		return slsvirt_mem_ioctl_range(sdev, true, uarg);
	case SLSVIRT_IOC_MEM_RECLAIM:
		return slsvirt_mem_ioctl_range(sdev, false, uarg);
	case SLSVIRT_IOC_MEM_INFO:
		return slsvirt_mem_ioctl_info(sdev, uarg);
	default:
		return -ENOTTY;
	}
}

/* ---- probe/remove ------------------------------------------------------ */

/* Called right after @sdev is allocated: the final put cancels m->work. */
void slsvirt_mem_init(struct slsvirt_dev *sdev)
{
	struct slsvirt_mem *m = &sdev->mem;

	mutex_init(&m->lock);
	INIT_LIST_HEAD(&m->chunks);
	INIT_LIST_HEAD(&m->regions);
	INIT_WORK(&m->work, slsvirt_mem_work);
	INIT_DELAYED_WORK(&m->stats_work, slsvirt_mem_stats_work);
}

/* Called from probe with the vectors allocated, before /dev/slsvirt exists. */
int slsvirt_mem_probe(struct slsvirt_dev *sdev, u32 features)
{
	struct slsvirt_mem *m = &sdev->mem;
	struct device *dev = &sdev->pdev->dev;
	struct slsvirt_mem_policy p;
	int irq, ret;

	if (!(features & SLSVIRT_F_MEMORY))
		return 0;

	m->desc = dmam_alloc_coherent(dev, SLSVIRT_MEM_MAX_DESC * sizeof(*m->desc),
				      &m->desc_dma, GFP_KERNEL);
	if (!m->desc)
		return -ENOMEM;
	ret = slsvirt_mem_read_policy(sdev, &p);
	if (ret)
		return ret;
	m->ram_pages = p.ram;
	if (p.released)
		/* Released by an earlier binding: those pages are unknown here. */
		dev_warn(dev, "%llu pages already released; they stay released\n",
			 p.released);

	irq = pci_irq_vector(sdev->pdev, SLSVIRT_VEC_MEM);
	if (irq < 0)
		return dev_err_probe(dev, irq, "no IRQ for MSI-X vector %d\n",
				     SLSVIRT_VEC_MEM);
	ret = devm_request_irq(dev, irq, slsvirt_mem_irq_handler, 0, DRV_NAME, sdev);
	if (ret)
		return dev_err_probe(dev, ret, "cannot request IRQ %d\n", irq);

	m->shrinker = shrinker_alloc(0, "slsvirt-%s", pci_name(sdev->pdev));
	if (!m->shrinker)
		return -ENOMEM;
	/*
	 * Scanned like any cache that is cheap to rebuild (DEFAULT_SEEKS): with
	 * seeks 0 the first reclaim round took half of everything, and a guest
	 * short of 85 MiB got all 128 MiB back.
	 */
	m->shrinker->seeks = DEFAULT_SEEKS;
	m->shrinker->batch = 256;
	m->shrinker->count_objects = slsvirt_mem_shrink_count;
	m->shrinker->scan_objects = slsvirt_mem_shrink_scan;
	m->shrinker->private_data = sdev;
	m->oom_nb.notifier_call = slsvirt_mem_oom_notify;
	ret = register_oom_notifier(&m->oom_nb);
	if (ret) {
		shrinker_free(m->shrinker);
		return ret;
	}
	shrinker_register(m->shrinker);
	m->enabled = true;

	schedule_work(&m->work);	/* a target may be set already */
	schedule_delayed_work(&m->stats_work, 0);
	return 0;
}

/*
 * Called from remove before the device is marked gone: stop following the
 * target and give everything the driver holds back to the guest (what the
 * ceiling refuses stays released, and is never used again). Elastic
 * regions keep their released pages: once the device is gone they can no
 * longer be reclaimed, so they are never handed to the allocator.
 */
void slsvirt_mem_remove(struct slsvirt_dev *sdev)
{
	struct slsvirt_mem *m = &sdev->mem;
	u64 left;

	if (!m->enabled)
		return;
	unregister_oom_notifier(&m->oom_nb);
	shrinker_free(m->shrinker);
	cancel_work_sync(&m->work);
	cancel_delayed_work_sync(&m->stats_work);
	mutex_lock(&m->lock);
	slsvirt_mem_deflate_locked(sdev, m->chunk_pages);
	left = m->chunk_pages;
	mutex_unlock(&m->lock);
	if (left)
		dev_warn(&sdev->pdev->dev, "%llu released pages kept (over the ceiling)\n",
			 left);
}
