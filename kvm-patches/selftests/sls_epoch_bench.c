// SPDX-License-Identifier: GPL-2.0-only
/*
 * One checkpoint epoch's harvest + re-arm, three ways, at equal dirty sets:
 *
 *   cap          KVM_SLS_EPOCH_HARVEST (repeated while the array fills)
 *   dirty_log    per memslot KVM_GET_DIRTY_LOG, a userspace scan of the
 *                bitmap, KVM_CLEAR_DIRTY_LOG (manual protect, as QEMU does)
 *   dirty_ring   a userspace drain of the vCPU's dirty ring (acquire/
 *                release), then KVM_RESET_DIRTY_RINGS
 *
 * The guest writes N distinct pages spread evenly over a 1 GiB memslot
 * (one page per bitmap word at N = 4096), then exits with a sync; the host
 * harvests with the vCPU stopped, which is what the epoch's vCPU stop costs
 * on top of the guest's exit and re-entry.  Every method must report
 * exactly the N pages (checked every epoch).  Each method gets its own VM
 * (a dirty-ring VM cannot use dirty bitmaps).
 *
 * Output: two lines per (method, pages), runs in the order A B C C B A,
 * each with the median over the epochs:
 *   RESULT method=cap pages=4096 harvest_us=... stop_us=... dirty_us=...
 * harvest_us: the ioctls plus turning their result into a page list
 * (with a ring smaller than the dirty set, the mid-epoch drains too);
 * stop_us: the guest's own TSC across its sync exit, i.e. exit + harvest +
 * re-entry (plus mid-epoch drains), minus verify_us;
 * dirty_us: KVM_RUN time in which the guest dirtied the N pages (includes
 * the write-protection faults the re-arm causes);
 * verify_us: this program's check of the epoch's page list (a sort of N
 * entries), done while the vCPU is stopped but no part of an epoch's cost.
 *
 *   sls_epoch_bench [-p pages[,pages...]] [-i epochs] [-m methods] [-s slots]
 *   (lists take "," or ":"; the kvm-nested L1 command line turns "," into spaces)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <linux/bitmap.h>
#include <asm/barrier.h>

#include "kvm_util.h"
#include "processor.h"
#include "test_util.h"
#include "ucall_common.h"

#define TEST_GPA	0x40000000ul
#define TEST_SLOT	1
#define MEM_PAGES	(1ul << (30 - 12))	/* 1 GiB */
#define MAX_PAGES	65536
#define RING_ENTRIES	65536

enum method { M_CAP, M_LOG, M_RING, NR_METHODS };
static const char *const method_name[] = { "cap", "dirty_log", "dirty_ring" };

/* Guest/host shared. */
static uint64_t guest_pages;	/* pages to dirty per epoch */
static uint64_t guest_stride;	/* in pages */
static uint64_t guest_mem_pages;
static uint64_t guest_stop_cycles;	/* TSC cycles of the last sync */

static void guest_code(void)
{
	uint64_t epoch, i, t0;

	for (epoch = 1;; epoch++) {
		for (i = 0; i < READ_ONCE(guest_pages); i++)
			*(volatile uint64_t *)(TEST_GPA + i * guest_stride * PAGE_SIZE) = epoch;
		t0 = rdtsc();
		GUEST_SYNC(epoch);
		/* The stop as the guest sees it: exit, host's harvest, re-entry. */
		WRITE_ONCE(guest_stop_cycles, rdtsc() - t0);
	}
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static uint64_t median(uint64_t *v, int n)
{
	qsort(v, n, sizeof(*v), cmp_u64);
	return v[n / 2];
}

struct bench {
	struct kvm_vm *vm;
	struct kvm_vcpu *vcpu;
	int nr_slots;
	uint64_t slot_pages;
	uint64_t *entries;		/* cap */
	unsigned long *bitmap;		/* dirty_log: one slot's bitmap */
	struct kvm_dirty_gfn *ring;	/* dirty_ring */
	uint32_t ring_fetch;
	uint64_t *list;			/* the epoch's harvest: gfn offsets */
	uint64_t nlist;			/* entries in list this epoch */
};

static void setup(struct bench *b, enum method m, int nr_slots)
{
	uint64_t s;

	memset(b, 0, sizeof(*b));
	b->nr_slots = nr_slots;
	b->slot_pages = MEM_PAGES / nr_slots;
	/* As dirty_log_test: room in memslot 0 for page tables of 2x the test memory. */
	b->vm = __vm_create(VM_SHAPE_DEFAULT, 1, 2 * MEM_PAGES);
	if (m == M_RING)
		vm_enable_dirty_ring(b->vm, RING_ENTRIES * sizeof(struct kvm_dirty_gfn));
	else	/* both dirty-log VMs configured as QEMU configures them */
		vm_enable_cap(b->vm, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
			      KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE);
	b->vcpu = vm_vcpu_add(b->vm, 0, guest_code);
	for (s = 0; s < nr_slots; s++)
		vm_userspace_mem_region_add(b->vm, VM_MEM_SRC_ANONYMOUS,
					    TEST_GPA + s * b->slot_pages * PAGE_SIZE,
					    TEST_SLOT + s, b->slot_pages,
					    KVM_MEM_LOG_DIRTY_PAGES);
	virt_map(b->vm, TEST_GPA, TEST_GPA, MEM_PAGES);
	if (m == M_RING)
		b->ring = vcpu_map_dirty_ring(b->vcpu);
	b->entries = calloc(MAX_PAGES, sizeof(*b->entries));
	b->bitmap = bitmap_zalloc(b->slot_pages);
	b->list = calloc(MEM_PAGES, sizeof(*b->list));
	guest_mem_pages = MEM_PAGES;
	sync_global_to_guest(b->vm, guest_mem_pages);
}

static void teardown(struct bench *b)
{
	kvm_vm_free(b->vm);
	free(b->entries);
	bitmap_free(b->bitmap);
	free(b->list);
}

static uint64_t slot_base(struct bench *b, uint32_t slot)
{
	return (uint64_t)(slot - TEST_SLOT) * b->slot_pages;
}

/* Each returns the number of pages harvested into b->list. */
static uint64_t harvest_cap(struct bench *b)
{
	struct kvm_sls_epoch_harvest h;
	uint64_t n = 0;
	uint32_t k;

	do {
		memset(&h, 0, sizeof(h));
		h.capacity = MAX_PAGES;
		h.entries = (uint64_t)(uintptr_t)b->entries;
		vm_ioctl(b->vm, KVM_SLS_EPOCH_HARVEST, &h);
		for (k = 0; k < h.nr_entries; k++) {
			uint64_t e = b->entries[k];

			b->list[b->nlist + n++] = slot_base(b, KVM_SLS_EPOCH_ENTRY_SLOT(e)) +
				       KVM_SLS_EPOCH_ENTRY_OFFSET(e);
		}
	} while (h.nr_entries == h.capacity);
	b->nlist += n;
	return n;
}

static uint64_t harvest_log(struct bench *b)
{
	uint64_t n = 0, w, nr_words = BITS_TO_LONGS(b->slot_pages);
	int s;

	for (s = 0; s < b->nr_slots; s++) {
		kvm_vm_get_dirty_log(b->vm, TEST_SLOT + s, b->bitmap);
		for (w = 0; w < nr_words; w++) {
			unsigned long mask = b->bitmap[w];

			while (mask) {
				b->list[b->nlist + n++] = s * b->slot_pages + w * BITS_PER_LONG +
					       __builtin_ctzl(mask);
				mask &= mask - 1;
			}
		}
		kvm_vm_clear_dirty_log(b->vm, TEST_SLOT + s, b->bitmap, 0, b->slot_pages);
	}
	b->nlist += n;
	return n;
}

static uint64_t harvest_ring(struct bench *b)
{
	uint64_t n = 0;

	for (;;) {
		struct kvm_dirty_gfn *cur = &b->ring[b->ring_fetch % RING_ENTRIES];

		if (smp_load_acquire(&cur->flags) != KVM_DIRTY_GFN_F_DIRTY)
			break;
		TEST_ASSERT(b->nlist + n < MEM_PAGES, "dirty ring: too many entries");
		b->list[b->nlist + n++] = slot_base(b, cur->slot) + cur->offset;
		smp_store_release(&cur->flags, KVM_DIRTY_GFN_F_RESET);
		b->ring_fetch++;
	}
	kvm_vm_reset_dirty_ring(b->vm);
	b->nlist += n;
	return n;
}

static uint64_t (*const harvest_fn[])(struct bench *) = {
	harvest_cap, harvest_log, harvest_ring,
};

/*
 * The epoch's page list must be exactly the pages the guest wrote. A dirty
 * ring drained mid-epoch may report a page twice (seen once in 65536 at a
 * ring-full exit); the set must still be exact.
 */
static uint64_t check_list(struct bench *b, uint64_t pages, uint64_t stride)
{
	uint64_t k, u = 0;

	qsort(b->list, b->nlist, sizeof(*b->list), cmp_u64);
	for (k = 0; k < b->nlist; k++)
		if (!u || b->list[k] != b->list[u - 1])
			b->list[u++] = b->list[k];
	TEST_ASSERT(u == pages, "%lu distinct pages harvested, guest wrote %lu", u, pages);
	for (k = 0; k < u; k++)
		TEST_ASSERT(b->list[k] == k * stride,
			    "harvested page %lu, expected %lu", b->list[k], k * stride);
	return b->nlist - u;
}

static void run(enum method m, uint64_t pages, int epochs, int nr_slots)
{
	uint64_t *harvest_ns = calloc(epochs, 8), *stop_ns = calloc(epochs, 8);
	uint64_t *dirty_ns = calloc(epochs, 8), *drain_ns = calloc(epochs + 1, 8);
	uint64_t *verify_ns = calloc(epochs, 8);
	uint64_t stride = MEM_PAGES / pages, t0, t1, t2, tsc_khz;
	uint64_t *stop_cycles, dups = 0;
	struct bench b;
	struct ucall uc;
	int e;

	setup(&b, m, nr_slots);
	guest_pages = pages;
	guest_stride = stride;
	sync_global_to_guest(b.vm, guest_pages);
	sync_global_to_guest(b.vm, guest_stride);
	stop_cycles = addr_gva2hva(b.vm, (vm_vaddr_t)&guest_stop_cycles);
	tsc_khz = __vcpu_ioctl(b.vcpu, KVM_GET_TSC_KHZ, NULL);
	TEST_ASSERT(tsc_khz > 0 && tsc_khz < 100000000, "KVM_GET_TSC_KHZ: %lu", tsc_khz);

	/*
	 * Epoch -1 faults the pages in and is not measured; the guest reports
	 * epoch e's stop after epoch e + 1's writes, hence the extra epoch.
	 */
	for (e = -1; e <= epochs; e++) {
		t0 = now_ns();
		b.nlist = 0;
		for (;;) {
			vcpu_run(b.vcpu);
			if (b.vcpu->run->exit_reason != KVM_EXIT_DIRTY_RING_FULL)
				break;
			/* The ring is smaller than the dirty set: drain mid-epoch. */
			t1 = now_ns();
			harvest_fn[m](&b);
			if (e >= 0)
				drain_ns[e] += now_ns() - t1;
		}
		t1 = now_ns();
		TEST_ASSERT(get_ucall(b.vcpu, &uc) == UCALL_SYNC, "guest did not sync");
		if (e > 0)
			stop_ns[e - 1] = READ_ONCE(*stop_cycles) * 1000000 / tsc_khz +
					 drain_ns[e - 1] - verify_ns[e - 1];
		if (e == epochs)
			break;
		harvest_fn[m](&b);
		t2 = now_ns();
		if (e >= 0) {
			dups += check_list(&b, pages, stride);
			verify_ns[e] = now_ns() - t2;
			harvest_ns[e] = t2 - t1 + drain_ns[e];
			dirty_ns[e] = t1 - t0 - drain_ns[e];
		}
	}
	printf("RESULT method=%s pages=%lu slots=%d harvest_us=%.1f stop_us=%.1f dirty_us=%.1f duplicates=%lu verify_us=%.1f\n",
	       method_name[m], pages, nr_slots, median(harvest_ns, epochs) / 1e3,
	       median(stop_ns, epochs) / 1e3, median(dirty_ns, epochs) / 1e3, dups,
	       median(verify_ns, epochs) / 1e3);
	fflush(stdout);
	teardown(&b);
	free(harvest_ns);
	free(stop_ns);
	free(dirty_ns);
	free(drain_ns);
	free(verify_ns);
}

int main(int argc, char *argv[])
{
	uint64_t page_list[8] = { 256, 4096, 65536 };
	int nr = 3, epochs = 15, slots = 1, opt, i, m;
	char methods[64] = "cap,dirty_log,dirty_ring", *tok, *save;
	bool want[NR_METHODS] = { 0 };

	while ((opt = getopt(argc, argv, "p:i:m:s:")) != -1) {
		switch (opt) {
		case 'p':
			for (nr = 0, tok = strtok_r(optarg, ",:", &save); tok && nr < 8;
			     tok = strtok_r(NULL, ",:", &save))
				page_list[nr++] = strtoull(tok, NULL, 0);
			break;
		case 'i':
			epochs = atoi(optarg);
			break;
		case 'm':
			snprintf(methods, sizeof(methods), "%s", optarg);
			break;
		case 's':
			slots = atoi(optarg);
			break;
		default:
			printf("usage: %s [-p pages,...] [-i epochs] [-m methods] [-s slots]\n", argv[0]);
			exit(KSFT_FAIL);
		}
	}
	for (tok = strtok_r(methods, ",:", &save); tok; tok = strtok_r(NULL, ",:", &save)) {
		for (m = 0; m < NR_METHODS; m++)
			if (!strcmp(tok, method_name[m]))
				want[m] = true;
	}
	TEST_ASSERT(epochs > 0 && slots > 0 && MEM_PAGES % slots == 0, "bad -i or -s");
	for (i = 0; i < nr; i++)
		TEST_ASSERT(page_list[i] && page_list[i] <= MAX_PAGES &&
			    MEM_PAGES % page_list[i] == 0, "bad page count %lu", page_list[i]);

	TEST_REQUIRE(!want[M_CAP] || kvm_has_cap(KVM_CAP_SLS_EPOCH));
	TEST_REQUIRE(!want[M_RING] || kvm_has_cap(KVM_CAP_DIRTY_LOG_RING_ACQ_REL) ||
		     kvm_has_cap(KVM_CAP_DIRTY_LOG_RING));
	/*
	 * Each method twice per size, in the order A B C C B A, so that a
	 * machine that gets slower or faster during the run (shared cores)
	 * weighs on every method alike; the caller averages the two.
	 */
	for (i = 0; i < nr; i++) {
		for (m = 0; m < NR_METHODS; m++)
			if (want[m])
				run(m, page_list[i], epochs, slots);
		for (m = NR_METHODS - 1; m >= 0; m--)
			if (want[m])
				run(m, page_list[i], epochs, slots);
	}
	return 0;
}
