/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Engine (inside QEMU) <-> hostd (slsvirtd) protocol, version 1.
 *
 * Transport: a SOCK_STREAM unix socket. hostd creates it owner-only and
 * accepts only peers whose SO_PEERCRED uid is its own (or root).
 *
 * Every message is a struct sls_msg_hdr followed by hdr.length payload
 * bytes. All integers are little-endian; structs are packed with explicit
 * padding so the C (QEMU) and C++ (hostd) sides agree byte for byte.
 * A receiver checks magic, version, type, length (against the type's fixed
 * part and SLS_PROTO_MAX_PAYLOAD) and payload_crc (crc32c, Castagnoli,
 * as in iSCSI/ext4) before it uses a single payload byte, and drops the
 * connection on any mismatch. hostd trusts nothing it receives: a bug in
 * QEMU must not corrupt the store.
 *
 * Flow:
 *   engine  HELLO (+ staging memfd via SCM_RIGHTS)  ->  hostd
 *   engine  <-  HELLO_ACK (status, newest durable epoch in the store)
 *   repeat: engine captures RAM into the staging memfd while vCPUs are
 *           paused, resumes them, then
 *   engine  EPOCH (+ device state inline)  ->  hostd
 *   engine  <-  EPOCH_ACK (after data and commit record are durable)
 *   restore: engine RESTORE -> hostd fills the staging memfd with the
 *           epoch's RAM image, engine <- RESTORE_ACK (+ device state).
 *   lazy restore (SLS_RESTORE_F_LAZY): hostd writes a page map (struct
 *           sls_lazy_map, below) at staging offset 0 instead of the image
 *           and passes the epoch's chain segment files with RESTORE_ACK
 *           (SCM_RIGHTS, read-only); the engine reads and checks each page
 *           itself when the guest first touches it.
 * At most one EPOCH is outstanding per connection (the staging area holds
 * one capture); the engine coalesces requests that arrive meanwhile.
 *
 * Staging memfd layout: the RAM blocks described in HELLO, each at its own
 * page-aligned staging_offset, non-overlapping, inside staging_size.
 */
#ifndef SLSVIRT_PROTO_H
#define SLSVIRT_PROTO_H

#include <stdint.h>

#define SLS_PROTO_MAGIC		0x50534c53u	/* "SLSP" */
#define SLS_PROTO_VERSION	1
#define SLS_PROTO_MAX_PAYLOAD	(64u << 20)	/* device state is inline */
#define SLS_NAME_LEN		64	/* incl. NUL */
#define SLS_IDSTR_LEN		256	/* QEMU RAMBlock idstr, incl. NUL */
#define SLS_MSG_TEXT_LEN	128	/* human-readable error text, incl. NUL */
#define SLS_MAX_RAM_BLOCKS	64
#define SLS_PAGE_SIZE		4096

enum sls_msg_type {
	SLS_MSG_HELLO		= 1,	/* engine -> hostd, carries 1 fd */
	SLS_MSG_HELLO_ACK	= 2,	/* hostd -> engine */
	SLS_MSG_EPOCH		= 3,	/* engine -> hostd */
	SLS_MSG_EPOCH_ACK	= 4,	/* hostd -> engine */
	SLS_MSG_RESTORE		= 5,	/* engine -> hostd */
	SLS_MSG_RESTORE_ACK	= 6,	/* hostd -> engine */
};

struct sls_msg_hdr {
	uint32_t magic;		/* SLS_PROTO_MAGIC */
	uint16_t version;	/* SLS_PROTO_VERSION (HELLO: sender's max) */
	uint16_t type;		/* enum sls_msg_type */
	uint32_t length;	/* payload bytes after the header */
	uint32_t payload_crc;	/* crc32c of the payload (0 for empty) */
	uint64_t seq;		/* per-sender sequence number, from 1 */
} __attribute__((packed));	/* 24 bytes */

struct sls_ram_block {
	char idstr[SLS_IDSTR_LEN];	/* NUL-terminated */
	uint64_t length;		/* bytes, multiple of SLS_PAGE_SIZE */
	uint64_t staging_offset;	/* multiple of SLS_PAGE_SIZE */
} __attribute__((packed));	/* 272 bytes */

/* HELLO: fixed part, then nr_blocks x struct sls_ram_block. */
struct sls_msg_hello {
	uint32_t min_version;	/* oldest protocol version the engine speaks */
	uint32_t max_version;	/* newest */
	char vm_name[SLS_NAME_LEN];	/* store name: [A-Za-z0-9._-]+, no leading '.' */
	uint32_t page_size;	/* SLS_PAGE_SIZE */
	uint32_t nr_blocks;	/* 1..SLS_MAX_RAM_BLOCKS */
	uint64_t staging_size;	/* bytes of the memfd passed with HELLO */
	uint64_t flags;		/* must be 0 */
	uint64_t reserved[4];	/* must be 0 */
} __attribute__((packed));

struct sls_msg_hello_ack {
	int32_t status;		/* 0, or -errno: the connection then closes */
	uint32_t version;	/* protocol version chosen */
	uint64_t durable_epoch;	/* newest committed epoch in the store, 0 = none */
	char message[SLS_MSG_TEXT_LEN];
} __attribute__((packed));

#define SLS_EPOCH_F_FULL	(1ull << 0)	/* every RAM page, not a delta */

/*
 * EPOCH: fixed part, then devstate_len bytes of QEMU device state
 * (qemu_save_device_state() format), then -- for a delta epoch (no
 * SLS_EPOCH_F_FULL) -- nr_pages uint64_t staging page indices (staging
 * offset / SLS_PAGE_SIZE), strictly ascending, each inside a RAM block.
 * RAM is in the staging memfd: a full epoch fills every block, a delta
 * epoch only the listed pages (the rest of staging is stale, not zero).
 * A delta epoch's parent_epoch is the epoch it applies on top of: the
 * previous epoch on this connection, which hostd acked durable.
 */
struct sls_msg_epoch {
	uint64_t epoch;		/* > every epoch sent before on this store */
	uint64_t parent_epoch;	/* epoch this one's state descends from, 0 = none */
	uint64_t flags;		/* SLS_EPOCH_F_* */
	uint64_t capture_realtime_ns;	/* CLOCK_REALTIME when captured */
	uint64_t stop_ns;	/* how long vCPUs were paused for this capture */
	uint32_t devstate_len;
	uint32_t nr_pages;	/* delta: page indices after devstate; full: 0 */
} __attribute__((packed));

struct sls_msg_epoch_ack {
	uint64_t epoch;
	int32_t status;		/* 0 = durable, -errno = failed (not visible) */
	uint32_t reserved;
	uint64_t bytes_written;
	char message[SLS_MSG_TEXT_LEN];
} __attribute__((packed));

#define SLS_RESTORE_F_LAZY	(1ull << 0)	/* page map + segment fds, no image */
#define SLS_RESTORE_F_SOURCE	(1ull << 1)	/* read source_vm's store (a clone) */
#define SLS_RESTORE_F_ALL	(SLS_RESTORE_F_LAZY | SLS_RESTORE_F_SOURCE)

/* RESTORE: 16 bytes (flags 0 only) or sizeof(struct sls_msg_restore). */
struct sls_msg_restore {
	uint64_t epoch;		/* 0 = newest epoch that verifies */
	uint64_t flags;		/* SLS_RESTORE_F_*; others must be 0 */
	char source_vm[SLS_NAME_LEN];	/* F_SOURCE: the store to read; else all 0 */
} __attribute__((packed));
#define SLS_MSG_RESTORE_V1_LEN	16

/*
 * Lazy restore page map, written by hostd at staging offset 0: the header,
 * nr_files uint64_t (the epoch of each segment file, in fd order), then
 * nr_pages entries sorted by staging_page, each page at most once. A
 * staging page without an entry is zero in the epoch. Every entry is the
 * newest copy of its page in the epoch's chain; file indexes the fds that
 * came with RESTORE_ACK (in order). entries_crc = crc32c of everything
 * after the header, header_crc = crc32c of the header's bytes before it.
 */
#define SLS_LAZY_MAP_MAGIC	0x4c534c53u	/* "SLSL" */
#define SLS_LAZY_MAX_FILES	250		/* fds in one SCM_RIGHTS message */

struct sls_lazy_map {
	uint32_t magic;		/* SLS_LAZY_MAP_MAGIC */
	uint32_t nr_files;	/* fds passed, 1..SLS_LAZY_MAX_FILES */
	uint64_t epoch;		/* the epoch mapped */
	uint64_t nr_pages;	/* entries after this header */
	uint32_t entries_crc;
	uint32_t header_crc;
} __attribute__((packed));	/* 32 bytes */

struct sls_lazy_page {
	uint64_t staging_page;	/* staging offset / SLS_PAGE_SIZE (HELLO layout) */
	uint64_t file_offset;	/* of the page's 4096 bytes in files[file] */
	uint32_t page_crc;	/* crc32c of those bytes */
	uint16_t file;		/* < nr_files */
	uint16_t reserved;	/* 0 */
} __attribute__((packed));	/* 24 bytes */

/* RESTORE_ACK: fixed part, then devstate_len bytes of device state. On
 * success the staging memfd holds the epoch's RAM in the HELLO layout, or
 * (lazy) the page map, and the chain's segment fds come with the message. */
struct sls_msg_restore_ack {
	uint64_t epoch;		/* epoch restored */
	int32_t status;		/* 0, or -errno */
	uint32_t devstate_len;
	char message[SLS_MSG_TEXT_LEN];
} __attribute__((packed));

#endif /* SLSVIRT_PROTO_H */
