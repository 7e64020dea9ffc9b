// SPDX-License-Identifier: GPL-2.0
/*
 * slsvirt: guest driver for the slsvirt-pci device (1af4:10f0).
 *
 * The device lets a guest ask its host for a durability barrier: PERSIST
 * returns once every guest memory write made before the call is part of a
 * durable checkpoint (an "epoch"). Register layout: include/slsvirt/hw.h.
 * Userspace interface (/dev/slsvirt ioctls): include/uapi/linux/slsvirt.h.
 *
 * Lifetime: struct slsvirt_dev is reference counted. The PCI binding holds
 * one reference (dropped by a devres action that runs after the IRQ has been
 * freed), and every open file holds one. On removal the device is marked
 * gone under cmd_lock, waiters are woken with -ENODEV and the misc device is
 * deregistered; files that stay open afterwards get -ENODEV and never touch
 * the (by then unmapped) registers.
 *
 * Asynchronous PERSIST: each open file (struct slsvirt_file) keeps a FIFO of
 * tickets. Tickets are appended under cmd_lock right after the doorbell that
 * produced them, so the FIFO is in ticket order, and since the durable and
 * failed epochs only grow, the settled tickets are always a prefix of it:
 * read() pops that prefix, poll() looks at the head.
 */

#include <linux/fs.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/io-64-nonatomic-lo-hi.h>
#include <linux/kref.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include <linux/slsvirt.h>	/* repo include/uapi (ccflags -I) */
#include <slsvirt/hw.h>		/* repo include (ccflags -I) */

#include "slsvirt-priv.h"


/*
 * A waiter re-reads the epoch registers itself this often, in case an
 * interrupt is lost (e.g. a device that does not re-raise its vector after
 * a restore). Finding progress that way is reported once: it is a device bug.
 */
#define SLSVIRT_POLL_INTERVAL	(HZ)

/* Completion records built on the stack per copy_to_user() in read(). */
#define SLSVIRT_READ_BATCH	8

/* One per open file: the asynchronous tickets it is owed completions for. */
struct slsvirt_file {
	struct slsvirt_dev *sdev;
	struct mutex read_lock;		/* one reader peeks, copies and pops at a time */
	spinlock_t lock;		/* head, count, tickets; nests inside cmd_lock */
	unsigned int head;
	unsigned int count;
	u64 tickets[SLSVIRT_ASYNC_MAX];	/* FIFO, non-decreasing */
};

static void slsvirt_release(struct kref *ref)
{
	struct slsvirt_dev *sdev = container_of(ref, struct slsvirt_dev, ref);

	/* A region unmapped after removal may have queued it. */
	cancel_work_sync(&sdev->mem.work);
	pci_dev_put(sdev->pdev);
	kfree(sdev);
}

static void slsvirt_put(struct slsvirt_dev *sdev)
{
	kref_put(&sdev->ref, slsvirt_release);
}

static void slsvirt_put_action(void *data)
{
	slsvirt_put(data);
}

/*
 * Caller holds cmd_lock with !gone, or is the IRQ handler. The registers are
 * read under epoch_lock (IRQs off) so that a read made before an interrupt
 * cannot overwrite the fresher values its handler stored.
 */
static void slsvirt_refresh_epochs(struct slsvirt_dev *sdev)
{
	unsigned long flags;

	spin_lock_irqsave(&sdev->epoch_lock, flags);
	sdev->durable_epoch = readq(sdev->regs + SLSVIRT_REG_DURABLE_EPOCH);
	sdev->failed_epoch = readq(sdev->regs + SLSVIRT_REG_FAILED_EPOCH);
	if (sdev->has_generation)
		sdev->generation = readq(sdev->regs + SLSVIRT_REG_GENERATION);
	spin_unlock_irqrestore(&sdev->epoch_lock, flags);
}

static irqreturn_t slsvirt_irq(int irq, void *data)
{
	struct slsvirt_dev *sdev = data;

	/* Registers stay mapped until after free_irq(), even once gone. */
	slsvirt_refresh_epochs(sdev);
	atomic_inc(&sdev->irq_count);
	wake_up_all(&sdev->epoch_wq);
	return IRQ_HANDLED;
}

enum slsvirt_wait_result {
	SLSVIRT_PENDING,
	SLSVIRT_DURABLE,
	SLSVIRT_FAILED,
	SLSVIRT_GONE,
};

static enum slsvirt_wait_result slsvirt_epoch_state(struct slsvirt_dev *sdev,
						    u64 target, u64 *durable)
{
	enum slsvirt_wait_result res = SLSVIRT_PENDING;
	unsigned long flags;

	spin_lock_irqsave(&sdev->epoch_lock, flags);
	*durable = sdev->durable_epoch;
	if (sdev->durable_epoch >= target)
		res = SLSVIRT_DURABLE;
	else if (sdev->failed_epoch >= target)
		res = SLSVIRT_FAILED;
	else if (sdev->gone)
		res = SLSVIRT_GONE;
	spin_unlock_irqrestore(&sdev->epoch_lock, flags);
	return res;
}

/*
 * Ring the PERSIST doorbell and return the epoch that covers every write
 * made before it, or a negative errno. Caller holds cmd_lock with !gone.
 */
static s64 slsvirt_persist_doorbell_locked(struct slsvirt_dev *sdev)
{
	struct device *dev = &sdev->pdev->dev;
	u32 status;
	u64 target;
	s64 ret;

	lockdep_assert_held(&sdev->cmd_lock);
	writel(SLSVIRT_CMD_PERSIST, sdev->regs + SLSVIRT_REG_CMD);
	status = readl(sdev->regs + SLSVIRT_REG_CMD_STATUS);
	target = readq(sdev->regs + SLSVIRT_REG_TARGET_EPOCH);
	/* The epoch may already be settled: the IRQ came before target was known. */
	slsvirt_refresh_epochs(sdev);

	switch (status) {
	case SLSVIRT_ST_OK:
		if (target == 0 || target > S64_MAX) {
			dev_warn_ratelimited(dev, "device returned invalid target epoch %llu\n",
					     target);
			ret = -EIO;
		} else {
			ret = target;
		}
		break;
	case SLSVIRT_ST_NOT_CHECKPOINTING:
		ret = -EIO;
		break;
	case SLSVIRT_ST_INVALID:
		dev_warn_ratelimited(dev, "device rejected PERSIST command\n");
		ret = -EIO;
		break;
	default:
		dev_warn_ratelimited(dev, "unknown command status %u\n", status);
		ret = -EIO;
		break;
	}
	return ret;
}

static s64 slsvirt_persist_doorbell(struct slsvirt_dev *sdev)
{
	s64 ret;

	if (mutex_lock_interruptible(&sdev->cmd_lock))
		return -ERESTARTSYS;
	ret = sdev->gone ? -ENODEV : slsvirt_persist_doorbell_locked(sdev);
	mutex_unlock(&sdev->cmd_lock);
	return ret;
}

/*
 * Ring the doorbell and queue the ticket on @sf, in one cmd_lock section so
 * that the FIFO stays in ticket order. Returns the ticket or a negative errno
 * (nothing queued).
 */
static s64 slsvirt_persist_async(struct slsvirt_file *sf)
{
	struct slsvirt_dev *sdev = sf->sdev;
	u64 durable;
	bool full;
	s64 ret;

	if (mutex_lock_interruptible(&sdev->cmd_lock))
		return -ERESTARTSYS;
	if (sdev->gone) {
		ret = -ENODEV;
		goto out_unlock;
	}
	spin_lock(&sf->lock);
	full = sf->count == SLSVIRT_ASYNC_MAX;
	spin_unlock(&sf->lock);
	if (full) {
		ret = -EBUSY;
		goto out_unlock;
	}

	ret = slsvirt_persist_doorbell_locked(sdev);
	if (ret < 0)
		goto out_unlock;

	spin_lock(&sf->lock);
	sf->tickets[(sf->head + sf->count) % SLSVIRT_ASYNC_MAX] = ret;
	sf->count++;
	spin_unlock(&sf->lock);
	atomic_inc(&sdev->async_pending);
	schedule_delayed_work(&sdev->poll_work, SLSVIRT_POLL_INTERVAL);
	/*
	 * The doorbell re-read the epochs: if the ticket settled that fast, its
	 * interrupt came before the ticket was queued and woke no poll()er.
	 */
	if (slsvirt_epoch_state(sdev, ret, &durable) != SLSVIRT_PENDING)
		wake_up_all(&sdev->epoch_wq);

out_unlock:
	mutex_unlock(&sdev->cmd_lock);
	return ret;
}

/* Re-read the epoch registers from process context (lost-interrupt fallback). */
static void slsvirt_poll_epochs(struct slsvirt_dev *sdev, u64 target, int irqs_before)
{
	u64 durable;

	mutex_lock(&sdev->cmd_lock);
	if (!sdev->gone &&
	    slsvirt_epoch_state(sdev, target, &durable) == SLSVIRT_PENDING) {
		slsvirt_refresh_epochs(sdev);
		if (slsvirt_epoch_state(sdev, target, &durable) != SLSVIRT_PENDING &&
		    atomic_read(&sdev->irq_count) == irqs_before)
			dev_warn_once(&sdev->pdev->dev,
				      "epoch %llu settled without an interrupt\n", target);
	}
	mutex_unlock(&sdev->cmd_lock);
}

/*
 * Lost-interrupt net for poll() and O_NONBLOCK readers, who do not re-read
 * the registers themselves: runs every SLSVIRT_POLL_INTERVAL while any
 * ticket is queued. Silent: an interrupt racing with this read is normal.
 */
static void slsvirt_poll_work(struct work_struct *work)
{
	struct slsvirt_dev *sdev = container_of(to_delayed_work(work),
						struct slsvirt_dev, poll_work);
	u64 durable, failed;
	unsigned long flags;
	bool moved;

	mutex_lock(&sdev->cmd_lock);
	if (sdev->gone) {
		mutex_unlock(&sdev->cmd_lock);
		return;
	}
	spin_lock_irqsave(&sdev->epoch_lock, flags);
	durable = sdev->durable_epoch;
	failed = sdev->failed_epoch;
	spin_unlock_irqrestore(&sdev->epoch_lock, flags);
	slsvirt_refresh_epochs(sdev);
	spin_lock_irqsave(&sdev->epoch_lock, flags);
	moved = durable != sdev->durable_epoch || failed != sdev->failed_epoch;
	spin_unlock_irqrestore(&sdev->epoch_lock, flags);
	mutex_unlock(&sdev->cmd_lock);

	if (moved)
		wake_up_all(&sdev->epoch_wq);
	/* remove() sets gone before cancel_delayed_work_sync(): no re-arm after. */
	if (atomic_read(&sdev->async_pending) && !READ_ONCE(sdev->gone))
		schedule_delayed_work(&sdev->poll_work, SLSVIRT_POLL_INTERVAL);
}

static long slsvirt_ioctl_persist(struct slsvirt_file *sf,
				  struct slsvirt_persist __user *uarg)
{
	struct slsvirt_dev *sdev = sf->sdev;
	struct slsvirt_persist req;
	enum slsvirt_wait_result res;
	u64 durable;
	long wret;
	s64 target;
	size_t i;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	if ((req.flags & ~SLSVIRT_PERSIST_ASYNC) || req.reserved0)
		return -EINVAL;
	for (i = 0; i < ARRAY_SIZE(req.reserved); i++)
		if (req.reserved[i])
			return -EINVAL;
	/* A read-only argument fails before a ticket exists, not after. */
	if (put_user(0ULL, &uarg->epoch))
		return -EFAULT;

	if (req.flags & SLSVIRT_PERSIST_ASYNC) {
		target = slsvirt_persist_async(sf);
		if (target < 0)
			return target;
		/* The ticket stays queued: its completion is still delivered. */
		return put_user((u64)target, &uarg->epoch) ? -EFAULT : 0;
	}

	target = slsvirt_persist_doorbell(sdev);
	if (target < 0)
		return target;

	/* Concurrent callers share epochs: the device coalesces requests. */
	for (;;) {
		int irqs_before = atomic_read(&sdev->irq_count);

		wret = wait_event_interruptible_timeout(sdev->epoch_wq,
				slsvirt_epoch_state(sdev, target, &durable) != SLSVIRT_PENDING,
				SLSVIRT_POLL_INTERVAL);
		if (wret < 0)
			return wret;	/* -ERESTARTSYS */
		if (wret > 0)
			break;
		slsvirt_poll_epochs(sdev, target, irqs_before);
	}

	res = slsvirt_epoch_state(sdev, target, &durable);
	switch (res) {
	case SLSVIRT_DURABLE:
		break;
	case SLSVIRT_FAILED:
		return -EIO;
	case SLSVIRT_GONE:
		return -ENODEV;
	case SLSVIRT_PENDING:
	default:
		/* Unreachable: the wait only ends once the state settled. */
		return -EIO;
	}

	req.epoch = durable;
	if (copy_to_user(uarg, &req, sizeof(req)))
		return -EFAULT;
	return 0;
}

static long slsvirt_ioctl_get_epoch(struct slsvirt_dev *sdev,
				    struct slsvirt_epoch_info __user *uarg)
{
	struct slsvirt_epoch_info ei;
	u32 status;
	size_t i;

	if (copy_from_user(&ei, uarg, sizeof(ei)))
		return -EFAULT;
	if (ei.flags)
		return -EINVAL;
	for (i = 0; i < ARRAY_SIZE(ei.reserved); i++)
		if (ei.reserved[i])
			return -EINVAL;

	mutex_lock(&sdev->cmd_lock);
	if (sdev->gone) {
		mutex_unlock(&sdev->cmd_lock);
		return -ENODEV;
	}
	/* CURRENT first: see the uAPI contract. */
	ei.current_epoch = readq(sdev->regs + SLSVIRT_REG_CURRENT_EPOCH);
	ei.durable_epoch = readq(sdev->regs + SLSVIRT_REG_DURABLE_EPOCH);
	ei.failed_epoch = readq(sdev->regs + SLSVIRT_REG_FAILED_EPOCH);
	status = readl(sdev->regs + SLSVIRT_REG_STATUS);
	mutex_unlock(&sdev->cmd_lock);

	ei.host_status = 0;
	if (status & SLSVIRT_STATUS_CHECKPOINTING)
		ei.host_status |= SLSVIRT_INFO_CHECKPOINTING;

	if (copy_to_user(uarg, &ei, sizeof(ei)))
		return -EFAULT;
	return 0;
}

static bool slsvirt_generation_differs(struct slsvirt_dev *sdev, u64 seen, u64 *now)
{
	unsigned long flags;
	bool gone;

	spin_lock_irqsave(&sdev->epoch_lock, flags);
	*now = sdev->generation;
	gone = sdev->gone;
	spin_unlock_irqrestore(&sdev->epoch_lock, flags);
	return gone || *now != seen;
}

static long slsvirt_ioctl_get_generation(struct slsvirt_dev *sdev,
					 struct slsvirt_generation __user *uarg)
{
	struct slsvirt_generation g;
	u64 now = 0;
	size_t i;

	if (copy_from_user(&g, uarg, sizeof(g)))
		return -EFAULT;
	if ((g.flags & ~SLSVIRT_GEN_WAIT) || g.reserved0)
		return -EINVAL;
	for (i = 0; i < ARRAY_SIZE(g.reserved); i++)
		if (g.reserved[i])
			return -EINVAL;
	mutex_lock(&sdev->cmd_lock);
	if (sdev->gone) {
		mutex_unlock(&sdev->cmd_lock);
		return -ENODEV;
	}
	if (!sdev->has_generation) {
		mutex_unlock(&sdev->cmd_lock);
		return -EOPNOTSUPP;
	}
	slsvirt_refresh_epochs(sdev);
	mutex_unlock(&sdev->cmd_lock);
	/* The device raises the epoch vector when the generation changes,
	 * and the IRQ handler refreshes sdev->generation. */
	if (g.flags & SLSVIRT_GEN_WAIT) {
		if (wait_event_interruptible(sdev->epoch_wq,
					     slsvirt_generation_differs(sdev, g.generation, &now)))
			return -ERESTARTSYS;
	} else {
		slsvirt_generation_differs(sdev, g.generation, &now);
	}
	if (READ_ONCE(sdev->gone))
		return -ENODEV;
	g.generation = now;
	if (copy_to_user(uarg, &g, sizeof(g)))
		return -EFAULT;
	return 0;
}

static long slsvirt_ioctl_get_info(struct slsvirt_dev *sdev, void __user *uarg)
{
	struct slsvirt_info info;
	u32 status;
	size_t i;

	if (copy_from_user(&info, uarg, sizeof(info)))
		return -EFAULT;
	if (info.flags)
		return -EINVAL;
	for (i = 0; i < ARRAY_SIZE(info.reserved); i++)
		if (info.reserved[i])
			return -EINVAL;

	mutex_lock(&sdev->cmd_lock);
	if (sdev->gone) {
		mutex_unlock(&sdev->cmd_lock);
		return -ENODEV;
	}
	info.dev_version = readl(sdev->regs + SLSVIRT_REG_VERSION);
	status = readl(sdev->regs + SLSVIRT_REG_STATUS);
	info.durable_epoch = readq(sdev->regs + SLSVIRT_REG_DURABLE_EPOCH);
	info.current_epoch = readq(sdev->regs + SLSVIRT_REG_CURRENT_EPOCH);
	mutex_unlock(&sdev->cmd_lock);

	info.proto_version = SLSVIRT_API_VERSION;
	info.host_status = 0;
	if (status & SLSVIRT_STATUS_CHECKPOINTING)
		info.host_status |= SLSVIRT_INFO_CHECKPOINTING;

	if (copy_to_user(uarg, &info, sizeof(info)))
		return -EFAULT;
	return 0;
}

static long slsvirt_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct slsvirt_file *sf = file->private_data;
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case SLSVIRT_IOC_GET_INFO:
		return slsvirt_ioctl_get_info(sf->sdev, uarg);
	case SLSVIRT_IOC_PERSIST:
		return slsvirt_ioctl_persist(sf, uarg);
	case SLSVIRT_IOC_GET_EPOCH:
		return slsvirt_ioctl_get_epoch(sf->sdev, uarg);
	case SLSVIRT_IOC_GET_GENERATION:
		return slsvirt_ioctl_get_generation(sf->sdev, uarg);
	default:
		return slsvirt_mem_ioctl(sf->sdev, cmd, uarg);
	}
}

static int slsvirt_completion_status(enum slsvirt_wait_result res)
{
	switch (res) {
	case SLSVIRT_DURABLE:
		return 0;
	case SLSVIRT_GONE:
		return -ENODEV;
	case SLSVIRT_FAILED:
	default:
		return -EIO;
	}
}

/*
 * Fill up to @max records for the settled prefix of @sf's FIFO without
 * popping it; returns how many. Caller holds read_lock.
 */
static unsigned int slsvirt_peek_completions(struct slsvirt_file *sf,
					     struct slsvirt_completion *recs,
					     unsigned int max)
{
	enum slsvirt_wait_result res;
	unsigned int n;
	u64 durable;

	spin_lock(&sf->lock);
	for (n = 0; n < min(max, sf->count); n++) {
		u64 ticket = sf->tickets[(sf->head + n) % SLSVIRT_ASYNC_MAX];

		res = slsvirt_epoch_state(sf->sdev, ticket, &durable);
		if (res == SLSVIRT_PENDING)
			break;
		recs[n] = (struct slsvirt_completion) {
			.ticket = ticket,
			.epoch = durable,
			.status = slsvirt_completion_status(res),
		};
	}
	spin_unlock(&sf->lock);
	return n;
}

static void slsvirt_pop_completions(struct slsvirt_file *sf, unsigned int n)
{
	spin_lock(&sf->lock);
	sf->head = (sf->head + n) % SLSVIRT_ASYNC_MAX;
	sf->count -= n;
	spin_unlock(&sf->lock);
	atomic_sub(n, &sf->sdev->async_pending);
}

/* Is the oldest queued ticket settled? -ENOMSG/-ENODEV if none is queued. */
static int slsvirt_head_state(struct slsvirt_file *sf, u64 *ticket, bool *settled)
{
	u64 durable;
	int ret = 0;

	spin_lock(&sf->lock);
	if (!sf->count) {
		ret = READ_ONCE(sf->sdev->gone) ? -ENODEV : -ENOMSG;
	} else {
		*ticket = sf->tickets[sf->head];
		*settled = slsvirt_epoch_state(sf->sdev, *ticket, &durable) !=
			   SLSVIRT_PENDING;
	}
	spin_unlock(&sf->lock);
	return ret;
}

/*
 * Wait until the oldest queued ticket settled. Caller holds read_lock, so
 * the head cannot be popped under us (writers only append).
 */
static int slsvirt_wait_head(struct slsvirt_file *sf, bool nonblock)
{
	struct slsvirt_dev *sdev = sf->sdev;
	bool settled;
	u64 ticket, durable;
	long wret;
	int ret;

	ret = slsvirt_head_state(sf, &ticket, &settled);
	if (ret || settled)
		return ret;
	if (nonblock)
		return -EAGAIN;
	for (;;) {
		int irqs_before = atomic_read(&sdev->irq_count);

		wret = wait_event_interruptible_timeout(sdev->epoch_wq,
				slsvirt_epoch_state(sdev, ticket, &durable) != SLSVIRT_PENDING,
				SLSVIRT_POLL_INTERVAL);
		if (wret < 0)
			return wret;	/* -ERESTARTSYS; the ticket stays queued */
		if (wret > 0)
			return 0;
		slsvirt_poll_epochs(sdev, ticket, irqs_before);
	}
}

static ssize_t slsvirt_read(struct file *file, char __user *buf, size_t count,
			    loff_t *ppos)
{
	struct slsvirt_file *sf = file->private_data;
	struct slsvirt_completion recs[SLSVIRT_READ_BATCH];
	size_t max = count / sizeof(recs[0]), done = 0;
	int ret;

	if (!max)
		return -EINVAL;
	if (mutex_lock_interruptible(&sf->read_lock))
		return -ERESTARTSYS;
	ret = slsvirt_wait_head(sf, file->f_flags & O_NONBLOCK);
	while (!ret && done < max) {
		unsigned int n = slsvirt_peek_completions(sf, recs,
				min_t(size_t, max - done, ARRAY_SIZE(recs)));

		if (!n)
			break;
		if (copy_to_user(buf + done * sizeof(recs[0]), recs, n * sizeof(recs[0]))) {
			ret = -EFAULT;	/* nothing popped: the records stay */
			break;
		}
		slsvirt_pop_completions(sf, n);
		done += n;
	}
	mutex_unlock(&sf->read_lock);
	return done ? done * sizeof(recs[0]) : ret;
}

static __poll_t slsvirt_poll(struct file *file, poll_table *wait)
{
	struct slsvirt_file *sf = file->private_data;
	__poll_t mask = 0;
	bool settled;
	u64 ticket;

	poll_wait(file, &sf->sdev->epoch_wq, wait);
	if (!slsvirt_head_state(sf, &ticket, &settled) && settled)
		mask |= EPOLLIN | EPOLLRDNORM;
	if (READ_ONCE(sf->sdev->gone))
		mask |= EPOLLERR;
	return mask;
}

/* Called by misc_open() under misc_mtx, so the device is still registered. */
static int slsvirt_open(struct inode *inode, struct file *file)
{
	struct slsvirt_dev *sdev = container_of(file->private_data,
						struct slsvirt_dev, misc);
	struct slsvirt_file *sf;

	sf = kzalloc(sizeof(*sf), GFP_KERNEL);
	if (!sf)
		return -ENOMEM;
	mutex_init(&sf->read_lock);
	spin_lock_init(&sf->lock);
	kref_get(&sdev->ref);
	sf->sdev = sdev;
	file->private_data = sf;
	return 0;
}

static int slsvirt_file_release(struct inode *inode, struct file *file)
{
	struct slsvirt_file *sf = file->private_data;

	atomic_sub(sf->count, &sf->sdev->async_pending);
	slsvirt_put(sf->sdev);
	mutex_destroy(&sf->read_lock);
	kfree(sf);
	return 0;
}

static int slsvirt_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct slsvirt_file *sf = file->private_data;

	return slsvirt_mem_mmap(sf->sdev, file, vma);
}

static const struct file_operations slsvirt_fops = {
	.owner		= THIS_MODULE,
	.open		= slsvirt_open,
	.release	= slsvirt_file_release,
	.read		= slsvirt_read,
	.poll		= slsvirt_poll,
	.mmap		= slsvirt_mmap,
	.unlocked_ioctl	= slsvirt_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.llseek		= noop_llseek,
};

static int slsvirt_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct device *dev = &pdev->dev;
	struct slsvirt_dev *sdev;
	u32 magic, version, features;
	int irq, nvec, ret;

	ret = pcim_enable_device(pdev);
	if (ret)
		return dev_err_probe(dev, ret, "cannot enable PCI device\n");

	if (pci_resource_len(pdev, SLSVIRT_BAR_REGS) < SLSVIRT_REGS_SIZE)
		return dev_err_probe(dev, -ENODEV, "BAR%d too small\n", SLSVIRT_BAR_REGS);

	sdev = kzalloc(sizeof(*sdev), GFP_KERNEL);
	if (!sdev)
		return -ENOMEM;
	kref_init(&sdev->ref);
	sdev->pdev = pci_dev_get(pdev);	/* for messages from files open after removal */
	mutex_init(&sdev->cmd_lock);
	spin_lock_init(&sdev->epoch_lock);
	init_waitqueue_head(&sdev->epoch_wq);
	INIT_DELAYED_WORK(&sdev->poll_work, slsvirt_poll_work);
	slsvirt_mem_init(sdev);
	/* Registered before the IRQ, so it runs after free_irq() on unbind. */
	ret = devm_add_action_or_reset(dev, slsvirt_put_action, sdev);
	if (ret)
		return ret;

	sdev->regs = pcim_iomap_region(pdev, SLSVIRT_BAR_REGS, DRV_NAME);
	if (IS_ERR(sdev->regs))
		return dev_err_probe(dev, PTR_ERR(sdev->regs), "cannot map BAR%d\n",
				     SLSVIRT_BAR_REGS);

	magic = readl(sdev->regs + SLSVIRT_REG_MAGIC);
	version = readl(sdev->regs + SLSVIRT_REG_VERSION);
	if (magic != SLSVIRT_HW_MAGIC)
		return dev_err_probe(dev, -ENODEV, "bad magic %#010x\n", magic);
	if (version != SLSVIRT_HW_VERSION)
		return dev_err_probe(dev, -ENODEV, "unsupported device version %u\n",
				     version);
	features = readl(sdev->regs + SLSVIRT_REG_FEATURES);
	sdev->has_generation = features & SLSVIRT_F_GENERATION;

	/* MSI-X writes are DMA. */
	pci_set_master(pdev);

	/* Managed by pcim_enable_device(): freed on unbind. */
	nvec = features & SLSVIRT_F_MEMORY ? SLSVIRT_MSIX_VECTORS : 1;
	ret = pci_alloc_irq_vectors(pdev, nvec, nvec, PCI_IRQ_MSIX);
	if (ret < 0)
		return dev_err_probe(dev, ret, "cannot allocate %d MSI-X vector(s)\n",
				     nvec);

	irq = pci_irq_vector(pdev, SLSVIRT_VEC_EPOCH);
	if (irq < 0)
		return dev_err_probe(dev, irq, "no IRQ for MSI-X vector %d\n",
				     SLSVIRT_VEC_EPOCH);
	slsvirt_refresh_epochs(sdev);
	ret = devm_request_irq(dev, irq, slsvirt_irq, 0, DRV_NAME, sdev);
	if (ret)
		return dev_err_probe(dev, ret, "cannot request IRQ %d\n", irq);

	ret = slsvirt_mem_probe(sdev, features);
	if (ret)
		return dev_err_probe(dev, ret, "cannot set up memory elasticity\n");

	sdev->misc.minor = MISC_DYNAMIC_MINOR;
	sdev->misc.name = SLSVIRT_DEV_NAME;
	sdev->misc.fops = &slsvirt_fops;
	sdev->misc.parent = dev;
	pci_set_drvdata(pdev, sdev);
	ret = misc_register(&sdev->misc);
	if (ret) {
		slsvirt_mem_remove(sdev);
		return dev_err_probe(dev, ret, "cannot register /dev/%s\n",
				     SLSVIRT_DEV_NAME);
	}

	dev_info(dev, "slsvirt device version %u, features %#x, status %#x, durable epoch %llu\n",
		 version, features, readl(sdev->regs + SLSVIRT_REG_STATUS),
		 sdev->durable_epoch);
	return 0;
}

static void slsvirt_remove(struct pci_dev *pdev)
{
	struct slsvirt_dev *sdev = pci_get_drvdata(pdev);
	unsigned long flags;

	/* Gives the driver's released memory back: needs the registers. */
	slsvirt_mem_remove(sdev);
	/* After this no process-context path touches the registers. */
	mutex_lock(&sdev->cmd_lock);
	spin_lock_irqsave(&sdev->epoch_lock, flags);
	sdev->gone = true;
	spin_unlock_irqrestore(&sdev->epoch_lock, flags);
	mutex_unlock(&sdev->cmd_lock);
	/* Sync waiters, readers and poll()ers: their tickets now read -ENODEV. */
	wake_up_all(&sdev->epoch_wq);
	cancel_delayed_work_sync(&sdev->poll_work);

	misc_deregister(&sdev->misc);
	/* devres then frees the IRQ, vectors and mapping, and drops our reference. */
}

static const struct pci_device_id slsvirt_ids[] = {
	{ PCI_DEVICE(SLSVIRT_PCI_VENDOR_ID, SLSVIRT_PCI_DEVICE_ID) },
	{ }
};
MODULE_DEVICE_TABLE(pci, slsvirt_ids);

static struct pci_driver slsvirt_driver = {
	.name		= DRV_NAME,
	.id_table	= slsvirt_ids,
	.probe		= slsvirt_probe,
	.remove		= slsvirt_remove,
};
module_pci_driver(slsvirt_driver);

MODULE_DESCRIPTION("slsvirt single-level-store persistence barrier device");
MODULE_AUTHOR("slsvirt project");
MODULE_LICENSE("GPL");
