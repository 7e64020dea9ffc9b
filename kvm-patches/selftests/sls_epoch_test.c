// SPDX-License-Identifier: GPL-2.0-only
/*
 * KVM_CAP_SLS_EPOCH / KVM_SLS_EPOCH_HARVEST test
 *
 * - uAPI: non-zero flags or reserved fields and a zero capacity are
 *   rejected with EINVAL; a VM that tracks with the dirty ring alone gets
 *   ENXIO.
 * - Exactness: with the vCPU stopped, one epoch's harvest over two
 *   dirty-logged memslots returns exactly the pages the guest wrote in that
 *   epoch, each once, with the right memslot encoding and contents, also
 *   when the user array is smaller than the dirty set (the call is
 *   repeated) and with KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (with and without
 *   KVM_DIRTY_LOG_INITIALLY_SET), and when dirty logging is only enabled
 *   after the guest wrote its memory through transparent huge pages (as
 *   QEMU enables it on a running VM: huge SPTEs are then split by the
 *   first re-arm).  One memslot starts 2MiB-aligned, the other does not.
 * - EFAULT loses nothing: pages of a harvest that could not be copied out
 *   are reported again by the next call.
 * - No write lost with a running vCPU: userspace keeps a shadow copy that
 *   it updates from each harvest while the guest writes continuously; after
 *   the guest stops and a last harvest, shadow and guest memory are equal.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/bitmap.h>

#include "kvm_util.h"
#include "processor.h"
#include "test_util.h"
#include "ucall_common.h"

#define SLOT_A		1
#define SLOT_B		2
#define GPA_A		0x40000000ul
/* Not 2MiB-aligned (nor 64-page-aligned): bitmap words straddle leaf page tables. */
#define GPA_B		0x48005000ul
/* Not multiples of 64: the last bitmap word of each memslot is partial. */
#define PAGES_A		4099ul
#define PAGES_B		1027ul
#define NR_PAGES	(PAGES_A + PAGES_B)
#define ITERATIONS	8
#define SMALL_CAPACITY	333	/* forces repeated calls and partial words */

#define MODE_PATTERN	0
#define MODE_CONTINUOUS	1

/* Guest/host shared; see sync_global_to_guest(). */
static uint64_t guest_mode;
static uint64_t guest_stop;

static uint64_t page_gva(uint64_t i)
{
	return i < PAGES_A ? GPA_A + i * PAGE_SIZE : GPA_B + (i - PAGES_A) * PAGE_SIZE;
}

/* About one page in seven, a different set every iteration. */
static bool page_selected(uint64_t iter, uint64_t i)
{
	uint64_t h = (iter + 1) * 0x9e3779b97f4a7c15ull ^ (i * 0xbf58476d1ce4e5b9ull);

	h ^= h >> 31;
	h *= 0x94d049bb133111ebull;
	h ^= h >> 29;
	return h % 7 == 0;
}

static void guest_code(void)
{
	uint64_t iter, i, n = 0;

	if (READ_ONCE(guest_mode) == MODE_PATTERN) {
		for (iter = 1;; iter++) {
			for (i = 0; i < NR_PAGES; i++)
				if (page_selected(iter, i))
					*(volatile uint64_t *)(page_gva(i) + 8 * (i % 64)) = iter;
			GUEST_SYNC(iter);
		}
	}

	/* Continuous: write a running counter all over until told to stop. */
	while (!READ_ONCE(guest_stop)) {
		for (i = 0; i < NR_PAGES; i += 1 + (n % 5)) {
			n++;
			*(volatile uint64_t *)(page_gva(i) + 8 * (n % 512)) = n;
		}
	}
	GUEST_DONE();
}

static int harvest(struct kvm_vm *vm, uint64_t *entries, uint32_t capacity,
		   uint32_t *nr_entries)
{
	struct kvm_sls_epoch_harvest h = {
		.capacity = capacity,
		.entries = (uint64_t)(uintptr_t)entries,
	};
	int r = __vm_ioctl(vm, KVM_SLS_EPOCH_HARVEST, &h);

	*nr_entries = h.nr_entries;
	return r;
}

static uint64_t entry_to_index(uint64_t e)
{
	uint32_t slot = KVM_SLS_EPOCH_ENTRY_SLOT(e);
	uint32_t off = KVM_SLS_EPOCH_ENTRY_OFFSET(e);

	TEST_ASSERT(slot == SLOT_A || slot == SLOT_B,
		    "entry 0x%lx names memslot 0x%x", e, slot);
	TEST_ASSERT(off < (slot == SLOT_A ? PAGES_A : PAGES_B),
		    "entry 0x%lx: offset %u beyond memslot %u", e, off, slot);
	return slot == SLOT_A ? off : PAGES_A + off;
}

/* Harvests until the array is not filled; returns the number of pages. */
static uint64_t harvest_all(struct kvm_vm *vm, uint64_t *entries,
			    uint32_t capacity, unsigned long *seen)
{
	uint64_t total = 0;
	uint32_t n, k;

	do {
		TEST_ASSERT(!harvest(vm, entries, capacity, &n),
			    "KVM_SLS_EPOCH_HARVEST failed, errno %d", errno);
		TEST_ASSERT(n <= capacity, "nr_entries %u > capacity %u", n, capacity);
		for (k = 0; k < n; k++) {
			uint64_t idx = entry_to_index(entries[k]);

			TEST_ASSERT(!test_bit(idx, seen), "page %lu reported twice", idx);
			set_bit(idx, seen);
		}
		total += n;
	} while (n == capacity);
	return total;
}

static void *host_page(struct kvm_vm *vm, uint64_t i)
{
	return addr_gpa2hva(vm, page_gva(i));
}

/*
 * @late: memslots created without dirty logging, which the caller enables
 * after the guest has written its memory; memslot A backed by transparent
 * huge pages.
 */
static struct kvm_vm *create_vm(struct kvm_vcpu **vcpu, uint64_t mode, uint64_t manual,
				bool late)
{
	struct kvm_vm *vm = vm_create_with_one_vcpu(vcpu, guest_code);
	uint32_t flags = late ? 0 : KVM_MEM_LOG_DIRTY_PAGES;

	if (manual)
		vm_enable_cap(vm, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, manual);
	/* THP needs a 2MiB-aligned GPA: memslot A only. */
	vm_userspace_mem_region_add(vm, late ? VM_MEM_SRC_ANONYMOUS_THP : VM_MEM_SRC_ANONYMOUS,
				    GPA_A, SLOT_A, PAGES_A, flags);
	vm_userspace_mem_region_add(vm, VM_MEM_SRC_ANONYMOUS, GPA_B, SLOT_B, PAGES_B, flags);
	virt_map(vm, GPA_A, GPA_A, PAGES_A);
	virt_map(vm, GPA_B, GPA_B, PAGES_B);
	guest_mode = mode;
	guest_stop = 0;
	sync_global_to_guest(vm, guest_mode);
	sync_global_to_guest(vm, guest_stop);
	return vm;
}

static void test_bad_args(void)
{
	struct kvm_sls_epoch_harvest h;
	struct kvm_vcpu *vcpu;
	uint64_t entries[8];
	struct kvm_vm *vm;
	int i;

	vm = create_vm(&vcpu, MODE_PATTERN, 0, false);

	memset(&h, 0, sizeof(h));
	h.capacity = 8;
	h.entries = (uint64_t)(uintptr_t)entries;
	h.flags = 1;
	TEST_ASSERT(__vm_ioctl(vm, KVM_SLS_EPOCH_HARVEST, &h) == -1 && errno == EINVAL,
		    "non-zero flags not rejected with EINVAL");
	h.flags = 0;
	for (i = 0; i < 4; i++) {
		h.reserved[i] = 1;
		TEST_ASSERT(__vm_ioctl(vm, KVM_SLS_EPOCH_HARVEST, &h) == -1 && errno == EINVAL,
			    "non-zero reserved[%d] not rejected with EINVAL", i);
		h.reserved[i] = 0;
	}
	h.capacity = 0;
	TEST_ASSERT(__vm_ioctl(vm, KVM_SLS_EPOCH_HARVEST, &h) == -1 && errno == EINVAL,
		    "zero capacity not rejected with EINVAL");
	h.capacity = 8;
	TEST_ASSERT(!__vm_ioctl(vm, KVM_SLS_EPOCH_HARVEST, &h),
		    "valid call failed, errno %d", errno);
	TEST_ASSERT(h.nr_slots == 2, "nr_slots %u, want 2 dirty-logged memslots", h.nr_slots);
	TEST_ASSERT(h.nr_entries == 0, "%u dirty pages before the guest ran", h.nr_entries);
	kvm_vm_free(vm);

	if (kvm_has_cap(KVM_CAP_DIRTY_LOG_RING_ACQ_REL) || kvm_has_cap(KVM_CAP_DIRTY_LOG_RING)) {
		vm = vm_create_barebones();
		vm_enable_dirty_ring(vm, 4096 * sizeof(struct kvm_dirty_gfn));
		TEST_ASSERT(__vm_ioctl(vm, KVM_SLS_EPOCH_HARVEST, &h) == -1 && errno == ENXIO,
			    "dirty-ring VM not rejected with ENXIO");
		kvm_vm_free(vm);
	}
	pr_info("bad arguments: EINVAL/ENXIO as documented\n");
}

static void test_exact(uint64_t manual, bool late)
{
	unsigned long *seen = bitmap_zalloc(NR_PAGES);
	uint64_t *entries = calloc(NR_PAGES, sizeof(*entries));
	uint64_t *bad, iter, i, n, want, first = 1, huge = 0;
	struct kvm_vcpu *vcpu;
	struct ucall uc;
	struct kvm_vm *vm;
	uint32_t got;

	vm = create_vm(&vcpu, MODE_PATTERN, manual, late);

	if (late) {
		/* Epoch 1 before dirty logging: huge SPTEs where THP allows. */
		vcpu_run(vcpu);
		TEST_ASSERT(get_ucall(vcpu, &uc) == UCALL_SYNC && uc.args[1] == 1,
			    "guest did not reach sync 1");
		huge = vm_get_stat(vm, "pages_2m");
		vm_mem_region_set_flags(vm, SLOT_A, KVM_MEM_LOG_DIRTY_PAGES);
		vm_mem_region_set_flags(vm, SLOT_B, KVM_MEM_LOG_DIRTY_PAGES);
		first = 2;
	}

	if (manual & KVM_DIRTY_LOG_INITIALLY_SET) {
		n = harvest_all(vm, entries, NR_PAGES, seen);
		TEST_ASSERT(n == NR_PAGES, "INITIALLY_SET: first harvest %lu pages, want %lu",
			    n, NR_PAGES);
		bitmap_zero(seen, NR_PAGES);
	}

	for (iter = first; iter <= ITERATIONS; iter++) {
		vcpu_run(vcpu);
		TEST_ASSERT(get_ucall(vcpu, &uc) == UCALL_SYNC && uc.args[1] == iter,
			    "guest did not reach sync %lu", iter);

		if (iter == 3) {
			/* An unwritable array: EFAULT, and the pages stay dirty. */
			bad = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			TEST_ASSERT(bad != MAP_FAILED, "mmap");
			TEST_ASSERT(harvest(vm, bad, 512, &got) == -1 && errno == EFAULT,
				    "harvest into a read-only array did not fail with EFAULT");
			munmap(bad, 4096);
		}

		bitmap_zero(seen, NR_PAGES);
		n = harvest_all(vm, entries, iter & 1 ? SMALL_CAPACITY : NR_PAGES, seen);
		for (want = 0, i = 0; i < NR_PAGES; i++) {
			bool sel = page_selected(iter, i);

			want += sel;
			TEST_ASSERT(sel == test_bit(i, seen),
				    "iteration %lu: page %lu %s", iter, i,
				    sel ? "written but not harvested" : "harvested but not written");
			if (sel)
				TEST_ASSERT(*(uint64_t *)(host_page(vm, i) + 8 * (i % 64)) == iter,
					    "page %lu does not hold iteration %lu", i, iter);
		}
		TEST_ASSERT(n == want, "%lu entries for %lu pages", n, want);
	}
	if (late)
		pr_info("exact harvest, manual protect 0x%lx, logging enabled after epoch 1 "
			"(%lu 2MiB mappings then): %lu epochs over 2 memslots\n",
			manual, huge, ITERATIONS - first + 1);
	else
		pr_info("exact harvest, manual protect 0x%lx: %d epochs over 2 memslots\n",
			manual, ITERATIONS);
	kvm_vm_free(vm);
	free(entries);
	bitmap_free(seen);
}

static void *vcpu_thread(void *arg)
{
	struct kvm_vcpu *vcpu = arg;
	struct ucall uc;

	vcpu_run(vcpu);
	TEST_ASSERT(get_ucall(vcpu, &uc) == UCALL_DONE, "guest did not finish");
	return NULL;
}

static void copy_harvested(struct kvm_vm *vm, uint8_t *shadow, uint64_t *entries,
			   unsigned long *seen)
{
	uint64_t i;

	bitmap_zero(seen, NR_PAGES);
	harvest_all(vm, entries, NR_PAGES, seen);
	for (i = 0; i < NR_PAGES; i++)
		if (test_bit(i, seen))
			memcpy(shadow + i * PAGE_SIZE, host_page(vm, i), PAGE_SIZE);
}

static void test_running_vcpu(void)
{
	uint8_t *shadow = calloc(NR_PAGES, PAGE_SIZE);
	uint64_t *entries = calloc(NR_PAGES, sizeof(*entries));
	unsigned long *seen = bitmap_zalloc(NR_PAGES);
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	pthread_t thread;
	uint64_t i;
	int round;

	vm = create_vm(&vcpu, MODE_CONTINUOUS, 0, false);
	pthread_create(&thread, NULL, vcpu_thread, vcpu);
	for (round = 0; round < 40; round++) {
		copy_harvested(vm, shadow, entries, seen);
		usleep(2000);
	}
	WRITE_ONCE(*(uint64_t *)addr_gva2hva(vm, (vm_vaddr_t)&guest_stop), 1);
	pthread_join(thread, NULL);
	copy_harvested(vm, shadow, entries, seen);

	for (i = 0; i < NR_PAGES; i++)
		TEST_ASSERT(!memcmp(shadow + i * PAGE_SIZE, host_page(vm, i), PAGE_SIZE),
			    "page %lu: a write made while the vCPU ran was never harvested", i);
	pr_info("running vCPU: shadow copy built from 41 harvests equals guest memory\n");
	kvm_vm_free(vm);
	bitmap_free(seen);
	free(entries);
	free(shadow);
}

int main(int argc, char *argv[])
{
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_SLS_EPOCH));

	test_bad_args();
	test_exact(0, false);
	test_exact(0, true);
	if (kvm_has_cap(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)) {
		test_exact(KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE, false);
		test_exact(KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET, false);
		test_exact(KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET, true);
	}
	test_running_vcpu();
	return 0;
}
