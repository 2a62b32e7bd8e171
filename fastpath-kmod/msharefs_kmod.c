// SPDX-License-Identifier: GPL-2.0
/*
 * msharefs_kmod: page-table sharing for msharefs regions.
 *
 * A region's memory is ordinary kernel memory in a host address space: the
 * mm of the process that created the region. There the module maps the
 * region's objects (a shmem file for anonymous memory, the caller's files)
 * with vm_mmap(), so core mm builds and owns the VMAs, pages and page tables:
 * pages are page cache or shmem pages on the LRU, reclaimable, migratable and
 * charged to the host's memory cgroup. Each region has two views in the host,
 * one as the layout says and one without write permission for read-only
 * windows.
 *
 * A window (an mmap() of the region's file) shares the view's page tables:
 * its PUD entries point at the view's PMD tables. A fault in a window is
 * forwarded to the host (handle_mm_fault() on the view) and the window's PUD
 * entry for that GiB is linked on the way out; every other attacher then
 * sees the page with no fault of its own. A window that starts 2 MiB but not
 * 1 GiB aligned (an offset window) links PMD entries of its own instead.
 *
 * fastpath-kmod/DESIGN.md states the locking and lifetime rules and which
 * core-mm walkers can reach the shared tables through a window.
 */

#include <linux/file.h>
#include <linux/fs.h>
#include <linux/fs_context.h>
#include <linux/hugetlb.h>
#include <linux/kthread.h>
#include <linux/maple_tree.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/mempolicy.h>
#include <linux/mman.h>
#include <linux/mmu_notifier.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/pagemap.h>
#include <linux/pgtable.h>
#include <linux/proc_fs.h>
#include <linux/pseudo_fs.h>
#include <linux/sched/mm.h>
#include <linux/seq_file.h>
#include <linux/shmem_fs.h>
#include <linux/slab.h>
#include <linux/sysfs.h>
#include <linux/uaccess.h>
#include <linux/falloc.h>
#include <linux/magic.h>
#include <asm/tlbflush.h>

#include "msharefs_kmod.h"

#define MSK_MAX_SIZE	BIT_ULL(46)
#define MSK_VIEWS	2	/* 0: as the layout says; 1: never writable */
#define MSK_PIN		MSK_VIEWS	/* view[MSK_PIN]: hugetlb pages, never linked */

static struct kthread_worker *msk_worker;

/* One per host mm: flushes every window's TLB when the host's flushes. */
struct msk_host {
	struct mmu_notifier mn;
	spinlock_t lock;		/* guards regions */
	struct list_head regions;
};

struct msk_region;

/*
 * One per view of a region: tells offset windows of host changes in the
 * view before they are made (see msk_view_invalidate()).
 */
struct msk_view_notifier {
	struct mmu_interval_notifier sub;
	struct msk_region *region;
	int view;
	bool inserted;
};

/* A layout entry: an object mapped at region pages [first, ...). */
struct msk_map {
	struct list_head node;		/* in region->maps, freed with it */
	struct file *file;
	unsigned long first;		/* region page index of pgoff */
	pgoff_t pgoff;
	int prot;
};

struct msk_region {
	struct mutex lock;		/* layout changes, serialised */
	struct rw_semaphore layout_sem;	/* faults (read) vs host changes (write) */
	struct kref ref;
	u64 size;
	u64 id;
	unsigned long ino;
	struct mm_struct *host_mm;	/* mmget() while the region lives */
	struct msk_host *host;
	unsigned long view[MSK_VIEWS + 1];	/* host addresses, PUD aligned */
	struct msk_view_notifier view_notifier[MSK_VIEWS];
	struct file *anon;		/* shmem object of anonymous mappings */
	struct maple_tree layout;	/* page index -> struct msk_map */
	struct list_head maps;
	struct list_head host_node;	/* in host->regions */
	struct list_head node;		/* in msk_regions */
	struct kthread_work free_work;
	spinlock_t windows_lock;	/* guards windows, handoff, writer, view notifiers' seq */
	struct list_head windows;
	bool handoff;			/* only writer's windows store */
	struct mm_struct *writer;	/* mmgrab()ed, or NULL */
	atomic_t windows_count;
	bool sealed;
	unsigned long mapped_pages;
	atomic64_t faults;
};

/* One per attaching mm: unlinks its windows before core mm walks them. */
struct msk_mm {
	struct mmu_notifier mn;
	spinlock_t lock;		/* guards windows */
	struct list_head windows;
};

/* A window's view of one GiB: the link, and the table core mm had there. */
struct msk_slot {
	pud_t link;			/* our entry while linked, else 0 */
	pud_t parked;			/* the attacher's own PMD table, or 0 */
};

struct msk_window {
	struct msk_region *region;
	struct mm_struct *mm;
	struct msk_mm *mmn;		/* NULL until registered: never linked before */
	struct list_head mm_node;	/* under mmn->lock */
	struct list_head region_node;	/* under region->windows_lock */
	unsigned long start;
	unsigned long end;
	int view;			/* written under mm->page_table_lock */
	bool writable;			/* VM_WRITE */
	int invalidating;		/* under mmn->lock */
	wait_queue_head_t wq;
	struct msk_slot *slots;		/* under mm->page_table_lock */
	/*
	 * An offset window starts 2 MiB but not 1 GiB aligned: it links PMD
	 * entries, one per 2 MiB slot (pmd_links, under mm->page_table_lock).
	 */
	bool offset;
	unsigned long *pmd_links;
};

static void msk_vm_flags_set(struct vm_area_struct *vma, unsigned long flags)
{
#ifdef MSK_HAVE_VM_FLAGS_SET
	vm_flags_set(vma, flags);
#else
	vma->vm_flags |= flags;
#endif
}

static void msk_vm_flags_clear(struct vm_area_struct *vma, unsigned long flags)
{
#ifdef MSK_HAVE_VM_FLAGS_SET
	vm_flags_clear(vma, flags);
#else
	vma->vm_flags &= ~flags;
#endif
}

/* ---- TLBs ---------------------------------------------------------------- */

static void msk_flush_local(void *unused)
{
	__flush_tlb_all();
}

/*
 * Drops every CPU's translations, for every address space. The module
 * cannot flush one mm's TLB on other CPUs with exported interfaces; a
 * global flush is correct for every window at once.
 */
static void msk_flush_all_cpus(void)
{
	on_each_cpu(msk_flush_local, NULL, 1);
}

/* ---- host notifier --------------------------------------------------------- */

static bool msk_region_in_range(struct msk_region *r, unsigned long start, unsigned long end)
{
	int v;

	for (v = 0; v < MSK_VIEWS; v++)
		if (r->view[v] && start < r->view[v] + r->size && end > r->view[v])
			return true;
	return false;
}

/*
 * Called when the host flushes its TLB for [start, end): after a PTE of a
 * view changed and before its page may be freed. Any CPU may cache that
 * translation through a window, so all are flushed.
 */
static void msk_host_flushed(struct mmu_notifier *mn, struct mm_struct *mm,
			     unsigned long start, unsigned long end)
{
	struct msk_host *h = container_of(mn, struct msk_host, mn);
	struct msk_region *r;
	bool flush = false;

	spin_lock(&h->lock);
	list_for_each_entry(r, &h->regions, host_node)
		if (atomic_read(&r->windows_count) && msk_region_in_range(r, start, end)) {
			flush = true;
			break;
		}
	spin_unlock(&h->lock);
	if (flush)
		msk_flush_all_cpus();
}

static struct mmu_notifier *msk_host_alloc(struct mm_struct *mm)
{
	struct msk_host *h = kzalloc(sizeof(*h), GFP_KERNEL);

	if (!h)
		return ERR_PTR(-ENOMEM);
	spin_lock_init(&h->lock);
	INIT_LIST_HEAD(&h->regions);
	return &h->mn;
}

static void msk_host_free(struct mmu_notifier *mn)
{
	kfree(container_of(mn, struct msk_host, mn));
}

static const struct mmu_notifier_ops msk_host_ops = {
#ifdef MSK_HAVE_SECONDARY_TLBS
	.arch_invalidate_secondary_tlbs = msk_host_flushed,
#else
	.invalidate_range = msk_host_flushed,
#endif
	.alloc_notifier = msk_host_alloc,
	.free_notifier = msk_host_free,
};

/* Puts r's reference on its host's flushing notifier. */
static void msk_host_put(struct msk_region *r)
{
	mmu_notifier_put(&r->host->mn);
	r->host = NULL;
}

/* ---- host calls ------------------------------------------------------------ */

struct msk_host_call {
	struct kthread_work work;
	struct mm_struct *mm;
	int (*fn)(struct msk_region *r, void *arg);
	struct msk_region *r;
	void *arg;
	int ret;
	struct completion done;
};

static void msk_host_call_work(struct kthread_work *work)
{
	struct msk_host_call *c = container_of(work, struct msk_host_call, work);

	kthread_use_mm(c->mm);
	c->ret = c->fn(c->r, c->arg);
	kthread_unuse_mm(c->mm);
	complete(&c->done);
}

/*
 * Runs fn with current->mm the region's host mm (vm_mmap() works on
 * current->mm): on the module's worker thread. The caller holds no mmap
 * lock.
 */
static int msk_in_host(struct msk_region *r, int (*fn)(struct msk_region *r, void *arg), void *arg)
{
	struct msk_host_call c = {
		.mm = r->host_mm, .fn = fn, .r = r, .arg = arg,
	};

	kthread_init_work(&c.work, msk_host_call_work);
	init_completion(&c.done);
	kthread_queue_work(msk_worker, &c.work);
	wait_for_completion(&c.done);
	return c.ret;
}

/* Whether file is on hugetlbfs (its pages are 2 MiB leaves in a PMD table). */
static bool msk_is_hugetlb(const struct file *file)
{
	return file && file_inode(file)->i_sb->s_magic == HUGETLBFS_MAGIC;
}

/*
 * Maps what a layout entry says at [addr, addr + len) of a view, or a hole.
 * flags: MAP_NORESERVE for a view's hugetlb piece (the pin holds the file's
 * reservation; one taken again here could fail after the old piece is gone).
 */
static int msk_host_map_piece(unsigned long addr, unsigned long len, struct file *file,
			      pgoff_t pgoff, int prot, unsigned long flags)
{
	unsigned long ret;

	if (file)
		ret = vm_mmap(file, addr, len, prot, MAP_SHARED | MAP_FIXED | flags,
			      pgoff << PAGE_SHIFT);
	else
		ret = vm_mmap(NULL, addr, len, PROT_NONE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, 0);
	if (IS_ERR_VALUE(ret))
		return (int)ret;
	return ret == addr ? 0 : -EFAULT;
}

/* mm's PUD entry for addr, or NULL: a window's tables exist while it does. */
static pud_t *msk_window_pud(struct mm_struct *mm, unsigned long addr)
{
	pgd_t *pgd = pgd_offset(mm, addr);
	p4d_t *p4d;

	if (!pgd_present(*pgd))
		return NULL;
	p4d = p4d_offset(pgd, addr);
	if (!p4d_present(*p4d))
		return NULL;
	return pud_offset(p4d, addr);
}

/* mm's PUD entry for addr if it points at a PMD table, else NULL. */
static pud_t *msk_pmd_table_pud(struct mm_struct *mm, unsigned long addr)
{
	pud_t *pud = msk_window_pud(mm, addr);

	return pud && pud_present(*pud) && !(pud_val(*pud) & _PAGE_PSE) ? pud : NULL;
}

/* mm's PMD entry for addr if its PMD table exists, else NULL. */
static pmd_t *msk_pmd_at(struct mm_struct *mm, unsigned long addr)
{
	pud_t *pud = msk_pmd_table_pud(mm, addr);

	return pud ? pmd_offset(pud, addr) : NULL;
}

/* Host context, holding current->mm's mmap lock: a PTE table maps addr? */
static bool msk_host_pte_table_at(unsigned long addr)
{
	pmd_t *pmd = msk_pmd_at(current->mm, addr);
	pmd_t entry;

	if (!pmd)
		return false;
	entry = READ_ONCE(*pmd);
	return pmd_present(entry) && !(pmd_val(entry) & _PAGE_PSE);
}

/*
 * Host context, holding current->mm's mmap lock. Whether the host has a page
 * table below addr that one replacement starting at addr could free: a PMD
 * table when addr starts a GiB, a PTE table when it starts 2 MiB.
 */
static bool msk_host_table_at(unsigned long addr)
{
	if (IS_ALIGNED(addr, PUD_SIZE))
		return msk_pmd_table_pud(current->mm, addr);
	return msk_host_pte_table_at(addr);
}

/* Host context, holding current->mm's mmap lock: a hugetlb mapping at addr? */
static bool msk_host_hugetlb_at(unsigned long addr)
{
	struct vm_area_struct *vma = find_vma(current->mm, addr);

	return vma && vma->vm_start <= addr && is_vm_hugetlb_page(vma);
}

/*
 * Host context: whether [addr, addr + len) has a PTE table (4 KiB pages were
 * mapped there). Huge pages may not replace it: hugetlb would free it.
 */
static bool msk_host_has_pte_tables(unsigned long addr, unsigned long len)
{
	unsigned long a;
	bool found = false;

	mmap_read_lock(current->mm);
	for (a = addr; a < addr + len && !found; a += PMD_SIZE)
		found = msk_host_pte_table_at(a);
	mmap_read_unlock(current->mm);
	return found;
}

#ifndef MSK_HAVE_PTE_FREE_DEFER
/*
 * Host context. Before pte_free_defer() (6.5), khugepaged's collapse of a
 * file THP frees the PTE table of every mapping of it at once
 * (retract_page_tables(), collapse_pte_mapped_thp()), under a window's
 * walker; both skip a VMA with VM_UFFD_WP. The views' file VMAs carry the
 * flag, with no userfaultfd context behind it: nothing arms uffd-wp entries
 * in them, and without such entries the flag changes nothing else the host
 * does (fault-around is off: each page is faulted on its own).
 */
static void msk_host_keep_tables(unsigned long addr, unsigned long len)
{
	struct vm_area_struct *vma;
	unsigned long a = addr;

	mmap_write_lock(current->mm);
	while (a < addr + len) {
		vma = find_vma(current->mm, a);
		if (!vma || vma->vm_start >= addr + len)
			break;
		if (vma->vm_file && !is_vm_hugetlb_page(vma))
			msk_vm_flags_set(vma, VM_UFFD_WP);
		a = vma->vm_end;
	}
	mmap_write_unlock(current->mm);
}
#else
/* pte_free_defer(): khugepaged frees a table after an RCU grace period. */
static void msk_host_keep_tables(unsigned long addr, unsigned long len)
{
}
#endif

/* A piece of a view: flagged at once, each piece, before the next is mapped. */
static int msk_host_map_view_piece(unsigned long addr, unsigned long len, struct file *file,
				   pgoff_t pgoff, int prot, unsigned long flags)
{
	int err = msk_host_map_piece(addr, len, file, pgoff, prot, flags);

	if (!err && file)
		msk_host_keep_tables(addr, len);
	return err;
}

/*
 * Host context, caller holds r->layout_sem for writing (no fault makes a new
 * table meanwhile). Replaces [addr, addr + len) of a view. Core mm frees a
 * page table when one replacement covers all of it; so where the host has a
 * table starting inside the range, the table's first page (its first huge
 * page where hugetlb is mapped or unmapped there) is replaced alone and the
 * rest after it: every table a window may link or walk stays. A hugetlb
 * mapping is also cut at every GiB, so that no VMA of it covers a whole PMD
 * table: huge_pmd_share() never shares a view's table with another mapping
 * of the file (its unsharing would leave windows on a table the view lost).
 */
static int msk_host_replace(unsigned long addr, unsigned long len, struct file *file,
			    pgoff_t pgoff, int prot)
{
	unsigned long end = addr + len, from = addr, cut, piece;
	bool huge = msk_is_hugetlb(file);
	unsigned long flags = huge ? MAP_NORESERVE : 0;
	int err;

	for (cut = ALIGN(addr, PMD_SIZE); cut < end; cut += PMD_SIZE) {
		bool table, huge_before;

		mmap_read_lock(current->mm);
		table = msk_host_table_at(cut);
		huge_before = msk_host_hugetlb_at(cut);
		mmap_read_unlock(current->mm);
		if (huge && IS_ALIGNED(cut, PUD_SIZE))
			table = true;
		piece = huge || huge_before ? PMD_SIZE : PAGE_SIZE;
		if (!table || cut + piece >= end)
			continue;
		if (cut > from) {
			err = msk_host_map_view_piece(from, cut - from, file,
						      pgoff + ((from - addr) >> PAGE_SHIFT),
						      prot, flags);
			if (err)
				return err;
		}
		err = msk_host_map_view_piece(cut, piece, file,
					      pgoff + ((cut - addr) >> PAGE_SHIFT), prot, flags);
		if (err)
			return err;
		from = cut + piece;
		cond_resched();
	}
	return msk_host_map_view_piece(from, end - from, file,
				       pgoff + ((from - addr) >> PAGE_SHIFT), prot, flags);
}

/* What one host change does: region pages [first, last) show m (or a hole). */
struct msk_change {
	unsigned long first;
	unsigned long last;
	const struct msk_map *m;
	int prot;
};

/*
 * No view is executable: the PUD entries windows share cannot carry NX (core
 * mm takes it for a bad entry), so a view's own PTEs decide, and a window
 * that did not ask for PROT_EXEC must not run code through them. Windows are
 * refused PROT_EXEC instead (msk_region_mmap()), as on a noexec mount.
 */
static int msk_view_prot(int view, int prot)
{
	prot &= ~PROT_EXEC;
	return view ? prot & ~PROT_WRITE : prot;
}

/*
 * Host context: whether the pin maps file from pgoff over all of
 * [addr, addr + len) already (a PROTECT keeps it, and the pages it pins).
 */
static bool msk_pin_maps(unsigned long addr, unsigned long len, struct file *file, pgoff_t pgoff)
{
	struct vm_area_struct *vma;
	unsigned long a = addr;
	bool same = true;

	mmap_read_lock(current->mm);
	while (same && a < addr + len) {
		vma = find_vma(current->mm, a);
		same = vma && vma->vm_start <= a && vma->vm_file &&
		       file_inode(vma->vm_file) == file_inode(file) &&
		       vma->vm_pgoff + ((a - vma->vm_start) >> PAGE_SHIFT) ==
		       pgoff + ((a - addr) >> PAGE_SHIFT);
		if (same)
			a = vma->vm_end;
	}
	mmap_read_unlock(current->mm);
	return same;
}

/*
 * Host context: the pin maps a hugetlb object before the views do. Its
 * mmap() takes the reservation for the file range (a shared hugetlb mapping
 * reserves per file, so the views' own need nothing more and cannot fail
 * for it halfway through a change), and msk_fault_pin() maps every page
 * there before a view maps it.
 */
static int msk_host_pin(struct msk_region *r, unsigned long off, unsigned long len,
			struct file *file, pgoff_t pgoff)
{
	unsigned long pin = r->view[MSK_PIN] + off;
	int err;

	if (msk_pin_maps(pin, len, file, pgoff))
		return 0;
	err = msk_host_map_piece(pin, len, file, pgoff, PROT_READ, 0);
	if (err)
		msk_host_map_piece(pin, len, NULL, 0, PROT_NONE, 0);
	return err;
}

/* Host context: applies a change to the pin and both views. */
static int msk_host_apply(struct msk_region *r, void *arg)
{
	const struct msk_change *c = arg;
	unsigned long off = c->first << PAGE_SHIFT;
	unsigned long len = (c->last - c->first) << PAGE_SHIFT;
	struct file *file = c->m ? c->m->file : NULL;
	pgoff_t pgoff = c->m ? c->m->pgoff + (c->first - c->m->first) : 0;
	bool huge = msk_is_hugetlb(file);
	int v, err;

	if (huge) {
		for (v = 0; v < MSK_VIEWS; v++)
			if (msk_host_has_pte_tables(r->view[v] + off, len))
				return -EBUSY;
		err = msk_host_pin(r, off, len, file, pgoff);
		if (err)
			return err;
	}
	for (v = 0; v < MSK_VIEWS; v++) {
		err = msk_host_replace(r->view[v] + off, len, file, pgoff,
				       msk_view_prot(v, c->prot));
		if (err)
			return err;
	}
	/* The views map no hugetlb page here any more: nor does the pin. */
	if (!huge)
		return msk_host_map_piece(r->view[MSK_PIN] + off, len, NULL, 0, PROT_NONE, 0);
	return 0;
}

/* Host context: reserves both views and the pin (PROT_NONE, PUD aligned). */
static int msk_host_reserve(struct msk_region *r, void *arg)
{
	u64 size = *(u64 *)arg;
	unsigned long raw, base;
	int v;

	for (v = 0; v <= MSK_PIN; v++) {
		raw = vm_mmap(NULL, 0, size + PUD_SIZE, PROT_NONE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, 0);
		if (IS_ERR_VALUE(raw)) {
			while (v-- > 0) {
				vm_munmap(r->view[v], size);
				r->view[v] = 0;
			}
			return (int)raw;
		}
		base = ALIGN(raw, PUD_SIZE);
		if (base > raw)
			vm_munmap(raw, base - raw);
		if (raw + PUD_SIZE > base)
			vm_munmap(base + size, raw + PUD_SIZE - base);
		r->view[v] = base;
	}
	return 0;
}

/*
 * Host context, no window left: gives both views and the pin back (arg:
 * their size, or NULL for r->size).
 */
static int msk_host_release(struct msk_region *r, void *arg)
{
	u64 size = arg ? *(u64 *)arg : r->size;
	int v;

	for (v = 0; v <= MSK_PIN; v++)
		if (r->view[v])
			vm_munmap(r->view[v], size);
	return 0;
}

/* ---- regions ------------------------------------------------------------- */

static LIST_HEAD(msk_regions);		/* guarded by msk_regions_lock */
static DEFINE_MUTEX(msk_regions_lock);
static u64 msk_next_region_id;		/* guarded by msk_regions_lock */

static int msk_get_regions_with_memory(char *buf, const struct kernel_param *kp)
{
	struct msk_region *r;
	int len = 0;

	mutex_lock(&msk_regions_lock);
	list_for_each_entry(r, &msk_regions, node)
		if (READ_ONCE(r->mapped_pages) && len < PAGE_SIZE - 24)
			len += sysfs_emit_at(buf, len, "%llu ", r->id);
	mutex_unlock(&msk_regions_lock);
	return len + sysfs_emit_at(buf, len, "\n");
}

static const struct kernel_param_ops msk_regions_with_memory_ops = {
	.get = msk_get_regions_with_memory,
};

module_param_cb(regions_with_memory, &msk_regions_with_memory_ops, NULL, 0400);
MODULE_PARM_DESC(regions_with_memory, "ids of the regions that have memory mapped now");

/* Page-table pages under [addr, addr + size) of mm, and the pages they map. */
static void msk_count_tables(struct mm_struct *mm, unsigned long addr, u64 size,
			     u64 *tables, u64 *resident)
{
	unsigned long end = addr + size, a;
	pud_t *pud;
	pmd_t *pmd;
	pte_t *pte;
	int i, j;

	for (a = addr; a < end; a += PUD_SIZE) {
		pud = msk_pmd_table_pud(mm, a);
		if (!pud)
			continue;
		(*tables)++;
		pmd = pmd_offset(pud, a);
		for (i = 0; i < PTRS_PER_PMD; i++) {
			pmd_t e = READ_ONCE(pmd[i]);

			if (!pmd_present(e))
				continue;
			if (pmd_val(e) & _PAGE_PSE) {
				*resident += PTRS_PER_PTE;
				continue;
			}
			(*tables)++;
			rcu_read_lock();
			pte = (pte_t *)pmd_page_vaddr(e);
			for (j = 0; j < PTRS_PER_PTE; j++)
				if (pte_present(READ_ONCE(pte[j])))
					(*resident)++;
			rcu_read_unlock();
		}
	}
}

static void msk_region_stats(struct msk_region *r, struct msharefs_kmod_stats *s)
{
	u64 tables = 0, resident = 0, ro_resident = 0;

	memset(s, 0, sizeof(*s));
	s->size = READ_ONCE(r->size);
	s->windows = atomic_read(&r->windows_count);
	s->faults = atomic64_read(&r->faults);
	if (!s->size)
		return;
	mmap_read_lock(r->host_mm);
	msk_count_tables(r->host_mm, r->view[0], r->size, &tables, &resident);
	msk_count_tables(r->host_mm, r->view[1], r->size, &tables, &ro_resident);
	mmap_read_unlock(r->host_mm);
	s->table_pages = tables;
	s->resident_pages = max(resident, ro_resident);
}

/*
 * /proc/msharefs_kmod: one line per region (root only). Figures are read
 * without the region's lock and may mix two sides of a change.
 */
static int msk_proc_show(struct seq_file *m, void *v)
{
	struct msharefs_kmod_stats s;
	struct msk_region *r;

	seq_puts(m, "id inode size resident_bytes table_bytes windows faults\n");
	mutex_lock(&msk_regions_lock);
	list_for_each_entry(r, &msk_regions, node) {
		msk_region_stats(r, &s);
		seq_printf(m, "%llu %lu %llu %llu %llu %llu %llu\n", r->id, READ_ONCE(r->ino),
			   s.size, s.resident_pages << PAGE_SHIFT, s.table_pages << PAGE_SHIFT,
			   s.windows, s.faults);
	}
	mutex_unlock(&msk_regions_lock);
	return 0;
}

static int msk_view_notifiers_insert(struct msk_region *r, u64 size);
static void msk_view_notifiers_remove(struct msk_region *r);

static void msk_region_free_work(struct kthread_work *work)
{
	struct msk_region *r = container_of(work, struct msk_region, free_work);
	struct msk_map *m, *next;

	msk_view_notifiers_remove(r);
	if (r->size) {
		kthread_use_mm(r->host_mm);
		msk_host_release(r, NULL);
		kthread_unuse_mm(r->host_mm);
	}
	if (r->host) {
		spin_lock(&r->host->lock);
		list_del(&r->host_node);
		spin_unlock(&r->host->lock);
		msk_host_put(r);
	}
	list_for_each_entry_safe(m, next, &r->maps, node) {
		fput(m->file);
		kfree(m);
	}
	if (r->anon)
		fput(r->anon);
	if (r->writer)
		mmdrop(r->writer);
	mtree_destroy(&r->layout);
	/* Out of /proc/msharefs_kmod before its host mm can go. */
	mutex_lock(&msk_regions_lock);
	list_del(&r->node);
	mutex_unlock(&msk_regions_lock);
	mmput(r->host_mm);
	kfree(r);
	module_put(THIS_MODULE);
}

/* The last reference: the host's views go on the worker (never inline). */
static void msk_region_release(struct kref *ref)
{
	struct msk_region *r = container_of(ref, struct msk_region, ref);

	kthread_init_work(&r->free_work, msk_region_free_work);
	kthread_queue_work(msk_worker, &r->free_work);
}

static void msk_region_put(struct msk_region *r)
{
	kref_put(&r->ref, msk_region_release);
}

/* A region hosted by current's mm. */
static struct msk_region *msk_region_alloc(void)
{
	struct msk_region *r;

	if (!current->mm)
		return ERR_PTR(-EINVAL);
	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (!r)
		return ERR_PTR(-ENOMEM);
	mutex_init(&r->lock);
	init_rwsem(&r->layout_sem);
	kref_init(&r->ref);
	mt_init(&r->layout);
	INIT_LIST_HEAD(&r->maps);
	INIT_LIST_HEAD(&r->host_node);
	INIT_LIST_HEAD(&r->windows);
	spin_lock_init(&r->windows_lock);
	atomic_set(&r->windows_count, 0);
	atomic64_set(&r->faults, 0);
	mmget(current->mm);
	r->host_mm = current->mm;
	__module_get(THIS_MODULE);	/* dropped by msk_region_free_work() */
	mutex_lock(&msk_regions_lock);
	r->id = ++msk_next_region_id;
	list_add_tail(&r->node, &msk_regions);
	mutex_unlock(&msk_regions_lock);
	return r;
}

/* Gives an unsized region its size and its views. Caller holds r->lock. */
static int msk_region_set_size(struct msk_region *r, u64 size)
{
	struct mmu_notifier *mn;
	struct file *anon;
	int err;

	if (r->size)
		return -EBUSY;
	if (!size || !IS_ALIGNED(size, PUD_SIZE) || size > MSK_MAX_SIZE)
		return -EINVAL;
	anon = shmem_file_setup("msharefs_region", size, VM_NORESERVE);
	if (IS_ERR(anon))
		return PTR_ERR(anon);
	mmap_write_lock(r->host_mm);
	mn = mmu_notifier_get_locked(&msk_host_ops, r->host_mm);
	mmap_write_unlock(r->host_mm);
	if (IS_ERR(mn)) {
		fput(anon);
		return PTR_ERR(mn);
	}
	r->host = container_of(mn, struct msk_host, mn);
	err = msk_in_host(r, msk_host_reserve, &size);
	if (!err)
		err = msk_view_notifiers_insert(r, size);
	if (err) {
		msk_view_notifiers_remove(r);
		if (r->view[0])
			msk_in_host(r, msk_host_release, &size);
		msk_host_put(r);
		fput(anon);
		return err;
	}
	r->anon = anon;
	spin_lock(&r->host->lock);
	list_add(&r->host_node, &r->host->regions);
	spin_unlock(&r->host->lock);
	/* Published last: mmap() and the ioctls read it without r->lock. */
	smp_store_release(&r->size, size);
	return 0;
}

static int msk_check_range(struct msk_region *r, const struct msharefs_kmod_range *a)
{
	if (a->flags || !a->size || !PAGE_ALIGNED(a->offset) || !PAGE_ALIGNED(a->size))
		return -EINVAL;
	if (a->offset >= r->size || a->size > r->size - a->offset)
		return -EINVAL;
	if (a->prot & ~(u32)(PROT_READ | PROT_WRITE | PROT_EXEC))
		return -EINVAL;
	return 0;
}

/* Caller holds r->lock: how many pages of [first, last) the layout maps. */
static unsigned long msk_mapped_in(struct msk_region *r, unsigned long first, unsigned long last)
{
	MA_STATE(mas, &r->layout, first, first);
	unsigned long n = 0;
	void *entry;

	rcu_read_lock();
	mas_for_each(&mas, entry, last - 1)
		n += min(mas.last, last - 1) - max(mas.index, first) + 1;
	rcu_read_unlock();
	return n;
}

/* Whether m's object lets its pages be mapped with prot (as mmap() judges). */
static int msk_may_map(const struct msk_map *m, int prot)
{
	struct inode *inode = file_inode(m->file);

	if (!(prot & PROT_WRITE))
		return 0;
	if (!(m->file->f_mode & FMODE_WRITE))
		return -EACCES;
	if (shmem_mapping(m->file->f_mapping) &&
	    (SHMEM_I(inode)->seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)))
		return -EPERM;
	return 0;
}

/*
 * The layout entry for file at pgoff from first with prot: an existing one
 * when the region has it already (PROTECT back and forth allocates nothing).
 * Caller holds r->lock.
 */
static struct msk_map *msk_map_new(struct msk_region *r, struct file *file, unsigned long first,
				   pgoff_t pgoff, int prot)
{
	struct msk_map *m;

	list_for_each_entry(m, &r->maps, node)
		if (m->file == file && m->first == first && m->pgoff == pgoff && m->prot == prot)
			return m;
	m = kzalloc(sizeof(*m), GFP_KERNEL);
	if (!m)
		return NULL;
	m->file = get_file(file);
	m->first = first;
	m->pgoff = pgoff;
	m->prot = prot;
	list_add(&m->node, &r->maps);
	return m;
}

/*
 * Caller holds r->lock. Whether a change of pages [first, last) would cut a
 * huge page of a hugetlbfs mapping (the layout's, or m's).
 */
static bool msk_cuts_huge_page(struct msk_region *r, unsigned long first, unsigned long last,
			       const struct msk_map *m)
{
	const unsigned long per = PMD_SIZE >> PAGE_SHIFT;
	unsigned long edge[2] = { first, last };
	struct msk_map *at, *before;
	int i;

	if (m && msk_is_hugetlb(m->file) && ((first | last) % per))
		return true;
	for (i = 0; i < 2; i++) {
		if (!(edge[i] % per))
			continue;
		at = mtree_load(&r->layout, edge[i]);
		before = mtree_load(&r->layout, edge[i] - 1);
		if ((at && msk_is_hugetlb(at->file)) || (before && msk_is_hugetlb(before->file)))
			return true;
	}
	return false;
}

/*
 * Caller holds r->lock. Region pages [first, last) show m with prot: the
 * host first (where the object's own permissions are checked), then the
 * layout.
 */
static int msk_apply(struct msk_region *r, unsigned long first, unsigned long last,
		     struct msk_map *m, int prot)
{
	struct msk_change c = { first, last, m, prot };
	int err;

	if (msk_cuts_huge_page(r, first, last, m))
		return -EINVAL;

	down_write(&r->layout_sem);
	err = msk_in_host(r, msk_host_apply, &c);
	up_write(&r->layout_sem);
	if (err)
		return err;
	return mtree_store_range(&r->layout, first, last - 1, m, GFP_KERNEL);
}

static long msk_map_object(struct msk_region *r, struct file *file, u64 offset, u64 size,
			   pgoff_t pgoff, int prot)
{
	unsigned long first = offset >> PAGE_SHIFT;
	unsigned long last = (offset + size) >> PAGE_SHIFT;
	struct msk_map *m;
	int err;

	if (msk_mapped_in(r, first, last))
		return -EEXIST;
	err = msk_may_map(&(struct msk_map){ .file = file }, prot);
	if (err)
		return err;
	m = msk_map_new(r, file, first, pgoff, prot);
	if (!m)
		return -ENOMEM;
	err = msk_apply(r, first, last, m, prot);
	if (err) {
		/* Nothing maps m: the host's pieces go back to holes. */
		msk_apply(r, first, last, NULL, PROT_NONE);
		mtree_store_range(&r->layout, first, last - 1, NULL, GFP_KERNEL);
		return err;
	}
	WRITE_ONCE(r->mapped_pages, r->mapped_pages + last - first);
	return 0;
}

/*
 * Caller holds r->lock. The host's views get holes there, then the
 * anonymous memory of the range is freed (the anonymous object's offsets
 * are the region's).
 */
static long msk_unmap(struct msk_region *r, const struct msharefs_kmod_range *a)
{
	unsigned long first = a->offset >> PAGE_SHIFT;
	unsigned long last = (a->offset + a->size) >> PAGE_SHIFT;
	unsigned long mapped = msk_mapped_in(r, first, last);
	int err;

	if (!mapped)
		return 0;
	err = msk_apply(r, first, last, NULL, PROT_NONE);
	if (err)
		return err;
	WRITE_ONCE(r->mapped_pages, r->mapped_pages - mapped);
	return vfs_fallocate(r->anon, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			     a->offset, a->size);
}

/* The layout entry at page index, and where it ends (exclusive), under rcu. */
static struct msk_map *msk_entry_at(struct msk_region *r, unsigned long index,
				    unsigned long limit, unsigned long *end)
{
	MA_STATE(mas, &r->layout, index, index);
	struct msk_map *m;

	rcu_read_lock();
	m = mas_find(&mas, limit - 1);
	rcu_read_unlock();
	if (m)
		*end = min(mas.last + 1, limit);
	return m;
}

/*
 * Caller holds r->lock. Every page of the range must be mapped [ENOMEM];
 * PROT_WRITE needs objects that may be written [EACCES, EPERM]. Each entry
 * is mapped again with the new protection.
 */
static long msk_protect(struct msk_region *r, const struct msharefs_kmod_range *a)
{
	unsigned long first = a->offset >> PAGE_SHIFT;
	unsigned long last = (a->offset + a->size) >> PAGE_SHIFT;
	unsigned long at, to;
	struct msk_map *m, *copy;
	int err;

	if (msk_mapped_in(r, first, last) != last - first)
		return -ENOMEM;
	for (at = first; at < last; at = to) {
		m = msk_entry_at(r, at, last, &to);
		err = m ? msk_may_map(m, a->prot) : -ENOMEM;
		if (err)
			return err;
	}
	for (at = first; at < last; at = to) {
		m = msk_entry_at(r, at, last, &to);
		if (!m)
			return -ENOMEM;
		if (m->prot == (int)a->prot)
			continue;
		copy = msk_map_new(r, m->file, m->first, m->pgoff, a->prot);
		if (!copy)
			return -ENOMEM;
		err = msk_apply(r, at, to, copy, a->prot);
		if (err) {
			msk_apply(r, at, to, m, m->prot);
			return err;
		}
	}
	return 0;
}

static long msk_map_file(struct msk_region *r, const struct msharefs_kmod_map_file *a)
{
	struct file *file;
	long err;

	if (!PAGE_ALIGNED(a->file_offset))
		return -EINVAL;
	file = fget(a->fd);
	if (!file)
		return -EBADF;
	if (!S_ISREG(file_inode(file)->i_mode) || !file->f_op->mmap)
		err = -ENODEV;
	else if (msk_is_hugetlb(file) && huge_page_size(hstate_file(file)) != PMD_SIZE)
		err = -EOPNOTSUPP;	/* a 1 GiB page would sit where windows link */
	else if (msk_is_hugetlb(file) &&
		 !IS_ALIGNED(a->offset | a->size | a->file_offset, PMD_SIZE))
		err = -EINVAL;
	else
		err = msk_map_object(r, file, a->offset, a->size, a->file_offset >> PAGE_SHIFT,
				     a->prot);
	fput(file);
	return err;
}

/* ---- windows -------------------------------------------------------------- */

/*
 * Caller holds w->mm->page_table_lock. Puts back what core mm had in slot i
 * (its own PMD table, or nothing). Returns true if the slot was linked.
 */
static bool msk_unlink_slot(struct msk_window *w, unsigned long i)
{
	struct msk_slot *s = &w->slots[i];
	pud_t *pud;

	if (!pud_val(s->link))
		return false;
	pud = msk_window_pud(w->mm, w->start + i * PUD_SIZE);
	if (pud && pud_val(*pud) == pud_val(s->link)) {
		if (pud_val(s->parked))
			set_pud(pud, s->parked);
		else
			pud_clear(pud);
	}
	s->link = __pud(0);
	s->parked = __pud(0);
	return true;
}

/*
 * The split lock of mm's PMD entry pmd, taken, or NULL where the kernel has
 * no split PMD locks (the lock would be mm->page_table_lock, held already).
 */
static spinlock_t *msk_pmd_lock(struct mm_struct *mm, pmd_t *pmd)
{
	spinlock_t *ptl = pmd_lockptr(mm, pmd);

	if (ptl == &mm->page_table_lock)
		return NULL;
	spin_lock(ptl);
	return ptl;
}

static void msk_pmd_unlock(spinlock_t *ptl)
{
	if (ptl)
		spin_unlock(ptl);
}

/*
 * Offset windows. Caller holds w->mm->page_table_lock. Clears slot i if it
 * is linked (a PMD entry pointing at a view's PTE table, or a copy of the
 * view's huge page entry), under the entry's own lock, which core mm's
 * walkers of the window take; with leaf_only, a link to a PTE table stays.
 * Returns true if an entry was cleared.
 */
static bool msk_unlink_pmd_slot(struct msk_window *w, unsigned long i, bool leaf_only)
{
	spinlock_t *ptl;	/* the entry's split PMD lock */
	pmd_t *pmd;

	if (!test_bit(i, w->pmd_links))
		return false;
	pmd = msk_pmd_at(w->mm, w->start + i * PMD_SIZE);
	if (pmd) {
		ptl = msk_pmd_lock(w->mm, pmd);
		if (leaf_only && !(pmd_val(*pmd) & _PAGE_PSE)) {
			msk_pmd_unlock(ptl);
			return false;
		}
		pmd_clear(pmd);
		msk_pmd_unlock(ptl);
	}
	__clear_bit(i, w->pmd_links);
	return true;
}

/*
 * Caller holds w->mm->page_table_lock. Unlinks the offset window's slots
 * that meet window offsets [off, end): all of them, or with leaf_only those
 * that copy a huge page entry plus those the range covers whole.
 */
static bool msk_unlink_pmd_range(struct msk_window *w, unsigned long off, unsigned long end,
				 bool leaf_only)
{
	unsigned long i, last = (end - 1) >> PMD_SHIFT;
	bool flush = false, whole;

	i = off >> PMD_SHIFT;
	for_each_set_bit_from(i, w->pmd_links, last + 1) {
		whole = off <= i << PMD_SHIFT && end >= (i + 1) << PMD_SHIFT;
		flush |= msk_unlink_pmd_slot(w, i, leaf_only && !whole);
	}
	return flush;
}

/* Unlinks the slots of [start, end) and flushes the TLBs if any was linked. */
static void msk_unlink_range(struct msk_window *w, unsigned long start, unsigned long end)
{
	unsigned long i, first, last;
	bool flush = false;

	start = max(start, w->start);
	end = min(end, w->end);
	if (start >= end)
		return;
	first = (start - w->start) >> PUD_SHIFT;
	last = (end - w->start + PUD_SIZE - 1) >> PUD_SHIFT;
	spin_lock(&w->mm->page_table_lock);
	if (w->offset)
		flush = msk_unlink_pmd_range(w, start - w->start, end - w->start, false);
	else
		for (i = first; i < last; i++)
			flush |= msk_unlink_slot(w, i);
	spin_unlock(&w->mm->page_table_lock);
	if (flush)
		msk_flush_all_cpus();
}

/*
 * Offset windows: links slot i of w to the view's entry for it, read
 * before: a pointer to the view's PTE table, or a copy of its huge page
 * entry. A writable copy of a clean entry is made read-only, so that a
 * store faults and the host marks its own entry dirty (the copy's dirty bit
 * would be lost with it); the fault then makes the copy writable. Caller
 * holds r->windows_lock, under which no host change began since seq.
 */
static void msk_link_pmd_slot(struct msk_window *w, int view, unsigned long i, pmd_t entry)
{
	spinlock_t *ptl;	/* the attacher entry's split PMD lock */
	pmd_t *pmd;

	if ((pmd_val(entry) & _PAGE_PSE) && pmd_write(entry) && !pmd_dirty(entry))
		entry = pmd_wrprotect(entry);
	spin_lock(&w->mm->page_table_lock);
	pmd = msk_pmd_at(w->mm, w->start + i * PMD_SIZE);
	if (!pmd || !w->mmn || w->view != view || READ_ONCE(w->invalidating))
		goto out;
	ptl = msk_pmd_lock(w->mm, pmd);
	if (pmd_none(*pmd) && !test_bit(i, w->pmd_links)) {
		set_pmd(pmd, entry);
		__set_bit(i, w->pmd_links);
	} else if (test_bit(i, w->pmd_links) && (pmd_val(*pmd) & _PAGE_PSE) && !pmd_write(*pmd) &&
		   pmd_write(entry) && pmd_pfn(*pmd) == pmd_pfn(entry)) {
		set_pmd(pmd, entry);	/* the host's entry is dirty now */
	}
	msk_pmd_unlock(ptl);
out:
	spin_unlock(&w->mm->page_table_lock);
}

/*
 * Links slot i of offset window w from the view's entry, if the host has a
 * present one. Returns false if a host change of the view began since seq.
 */
static bool msk_link_offset_slot(struct msk_window *w, int view, unsigned long seq,
				 unsigned long i)
{
	struct msk_region *r = w->region;
	pmd_t *hpmd = msk_pmd_at(r->host_mm, r->view[view] + i * PMD_SIZE);
	bool settled;
	pmd_t entry;

	if (!hpmd)
		return true;
	entry = READ_ONCE(*hpmd);
	/*
	 * Present entries only (an entry pmdp_invalidate() cleared keeps
	 * _PAGE_PSE), and no NUMA hinting entry: the host's fault resolves it.
	 */
	if (!(pmd_val(entry) & _PAGE_PRESENT) || pmd_protnone(entry))
		return true;
	spin_lock(&r->windows_lock);
	settled = !mmu_interval_read_retry(&r->view_notifier[view].sub, seq);
	if (settled)
		msk_link_pmd_slot(w, view, i, entry);
	spin_unlock(&r->windows_lock);
	return settled;
}

/*
 * Links the offset window's slots that both sides have a table for: the
 * attacher's PMD table (core mm made one for the faulting GiB) and the
 * view's entry. The faulting slot, and unless it was linked already (a
 * store into a read-only copy) every other slot. Caller holds the host's mmap
 * lock, which keeps the host's PMD tables; seq is from
 * mmu_interval_read_begin() before the host fault. A host change begun
 * since may have changed or freed what was read without finding the link
 * to take back: then nothing is linked and the access faults again.
 */
static void msk_link_offset(struct msk_window *w, int view, unsigned long seq, unsigned long slot)
{
	unsigned long i, nr = (w->end - w->start) >> PMD_SHIFT;
	bool all = !test_bit(slot, w->pmd_links);

	/* The faulting slot first: a later host change stops the walk. */
	if (!msk_link_offset_slot(w, view, seq, slot) || !all)
		return;
	for (i = 0; i < nr; i++)
		if (i != slot && !msk_link_offset_slot(w, view, seq, i))
			return;
}

/*
 * A host change of range begins in a view (called for ranges that meet it,
 * before anything changes). Offset windows copy the view's huge page
 * entries, which the host changes on its own, and point at PTE tables the
 * change may free if it covers a whole 2 MiB: such links go now, and the
 * sequence count tells faults in progress not to link what they read. A
 * link to a PTE table the change only edits stays: the edit is in the
 * shared table. Only spinlocks are taken, so a range that may not block is
 * served too.
 */
static bool msk_view_invalidate(struct mmu_interval_notifier *sub,
				const struct mmu_notifier_range *range, unsigned long cur_seq)
{
	struct msk_view_notifier *vn = container_of(sub, struct msk_view_notifier, sub);
	struct msk_region *r = vn->region;
	unsigned long base = r->view[vn->view], size = READ_ONCE(r->size), off, end;
	struct msk_window *w;
	bool flush = false;

	off = max(range->start, base) - base;
	end = min(range->end, base + size) - base;
	spin_lock(&r->windows_lock);
	mmu_interval_set_seq(sub, cur_seq);
	list_for_each_entry(w, &r->windows, region_node) {
		if (!w->offset || off >= end)
			continue;
		spin_lock(&w->mm->page_table_lock);
		if (w->view == vn->view)
			flush |= msk_unlink_pmd_range(w, off, end, true);
		spin_unlock(&w->mm->page_table_lock);
	}
	spin_unlock(&r->windows_lock);
	if (flush)
		msk_flush_all_cpus();
	return true;
}

static const struct mmu_interval_notifier_ops msk_view_ops = {
	.invalidate = msk_view_invalidate,
};

/* Each view gets its notifier once it is reserved (size: the views' size). */
static int msk_view_notifiers_insert(struct msk_region *r, u64 size)
{
	struct msk_view_notifier *vn;
	int v, err;

	for (v = 0; v < MSK_VIEWS; v++) {
		vn = &r->view_notifier[v];
		vn->region = r;
		vn->view = v;
		err = mmu_interval_notifier_insert(&vn->sub, r->host_mm, r->view[v], size,
						   &msk_view_ops);
		if (err)
			return err;
		vn->inserted = true;
	}
	return 0;
}

/* Before the views go: waits for the callbacks in progress. */
static void msk_view_notifiers_remove(struct msk_region *r)
{
	int v;

	for (v = 0; v < MSK_VIEWS; v++)
		if (r->view_notifier[v].inserted) {
			mmu_interval_notifier_remove(&r->view_notifier[v].sub);
			r->view_notifier[v].inserted = false;
		}
}

/*
 * Points slot i of w at the view's PMD table for host address haddr. Caller
 * holds the host's mmap lock (the host's PUD entries are stable under it).
 * A PMD table core mm put in the slot (a fault while it was unlinked) is
 * parked, and put back when the slot is unlinked so that core mm frees it.
 */
static void msk_link_slot(struct msk_window *w, unsigned long i, int view, unsigned long haddr)
{
	struct msk_slot *s = &w->slots[i];
	pud_t *hpud, *pud, link;

	hpud = msk_pmd_table_pud(w->region->host_mm, haddr);
	if (!hpud)
		return;
	link = *hpud;
	spin_lock(&w->mm->page_table_lock);
	pud = msk_window_pud(w->mm, w->start + i * PUD_SIZE);
	/*
	 * A handoff changed the window's view meanwhile, or core mm is about to
	 * walk the window (its notifier unlinks under this lock after counting
	 * itself in): the next fault links.
	 */
	if (!pud || !w->mmn || w->view != view || READ_ONCE(w->invalidating) ||
	    pud_val(*pud) == pud_val(link))
		goto out;
	if (!pud_none(*pud) && pud_val(*pud) != pud_val(s->link)) {
		if (pud_val(s->parked))
			goto out;	/* a second table of core mm's: leave it */
		s->parked = *pud;
	}
	set_pud(pud, link);
	s->link = link;
out:
	spin_unlock(&w->mm->page_table_lock);
}

/*
 * Links every slot of w whose PMD table the host has. Caller holds the
 * host's mmap lock (or its own, when it is the host's mm).
 */
static void msk_link_window(struct msk_window *w)
{
	struct msk_region *r = w->region;
	int view = READ_ONCE(w->view);
	unsigned long i, nr = (w->end - w->start) >> PUD_SHIFT;

	for (i = 0; i < nr; i++)
		msk_link_slot(w, i, view, r->view[view] + i * PUD_SIZE);
}

/*
 * A new window links what the host has at once, so that neither a fault nor
 * a table of the attacher's own is needed to read a populated region. Its
 * mm's mmap lock is held for writing; the host's is only tried.
 */
static void msk_link_new_window(struct msk_window *w)
{
	struct mm_struct *host = w->region->host_mm;

	if (w->offset)
		return;	/* links at faults, where core mm made the PMD tables */
	if (host == w->mm) {
		msk_link_window(w);
	} else if (mmap_read_trylock(host)) {
		msk_link_window(w);
		mmap_read_unlock(host);
	}
}

/*
 * Caller holds the host's mmap lock. Maps the hugetlb page at region offset
 * off in the pin, before a view maps it: no view then maps a hugetlb page
 * alone, which madvise(COLD/PAGEOUT) through a window over part of it would
 * take for a folio of its own and split.
 */
static vm_fault_t msk_fault_pin(struct msk_region *r, unsigned long off)
{
	unsigned long pin = r->view[MSK_PIN] + off;
	struct vm_area_struct *vma = find_vma(r->host_mm, pin);

	if (!vma || vma->vm_start > pin || !is_vm_hugetlb_page(vma))
		return VM_FAULT_SIGBUS;
	return handle_mm_fault(vma, pin, FAULT_FLAG_REMOTE, NULL);
}

static const struct vm_operations_struct msk_vm_ops;
static int msk_window_register(struct msk_window *w);

/*
 * The first fault of a window whose registration failed (a signal was
 * pending in fork()): registers it under the mmap lock taken for writing
 * and has the access retried. A fault that may not drop the lock cannot:
 * SIGBUS, as for any window that cannot be served.
 */
static vm_fault_t msk_fault_register(struct vm_fault *vmf)
{
	struct mm_struct *mm = vmf->vma->vm_mm;
	unsigned long addr = vmf->address;
	struct vm_area_struct *vma;
	struct msk_window *w;

	if (!(vmf->flags & FAULT_FLAG_ALLOW_RETRY) || (vmf->flags & FAULT_FLAG_RETRY_NOWAIT))
		return VM_FAULT_SIGBUS;
	mmap_read_unlock(mm);
	if (mmap_write_lock_killable(mm))
		return VM_FAULT_RETRY;
	/* The window may have gone meanwhile: look it up again. */
	vma = vma_lookup(mm, addr);
	w = vma && vma->vm_ops == &msk_vm_ops ? vma->vm_private_data : NULL;
	if (w && !w->mmn)
		msk_window_register(w);
	mmap_write_unlock(mm);
	return VM_FAULT_RETRY;
}

static vm_fault_t msk_fault_common(struct vm_fault *vmf)
{
	struct vm_area_struct *vma = vmf->vma;
	struct msk_window *w = vma->vm_private_data;
	struct msk_region *r;
	struct vm_area_struct *hvma;
	struct mm_struct *host;
	unsigned long off, haddr, seq = 0;
	unsigned int flags;
	vm_flags_t need;
	vm_fault_t ret;
	int view;
	bool own, layout;

#ifdef MSK_HAVE_VMA_LOCK
	if (vmf->flags & FAULT_FLAG_VMA_LOCK) {
		/* Forwarding takes mmap locks: ask for the fault under mmap_lock. */
		vma_end_read(vma);
		return VM_FAULT_RETRY;
	}
#endif
	if (!w)
		return VM_FAULT_SIGBUS;
	if (!READ_ONCE(w->mmn))
		return msk_fault_register(vmf);
	r = w->region;
	host = r->host_mm;
	/* Core mm is walking this window through the other side: wait it out. */
	if (wait_event_killable(w->wq, !READ_ONCE(w->invalidating)))
		return VM_FAULT_SIGBUS;
	off = (vmf->address & PAGE_MASK) - vma->vm_start;
	view = READ_ONCE(w->view);
	haddr = r->view[view] + off;
	/* Offset windows: no host change in the view may be in progress. */
	if (w->offset)
		seq = mmu_interval_read_begin(&r->view_notifier[view].sub);
	need = VM_READ;
	if (vmf->flags & FAULT_FLAG_WRITE)
		need = VM_WRITE;
	else if (vmf->flags & FAULT_FLAG_INSTRUCTION)
		need = VM_EXEC;
	/*
	 * r->layout_sem keeps host changes (which decide from the host's tables
	 * where they may cut) from running while a fault makes new tables.
	 * Neither it nor the host's mmap lock is waited for while the
	 * attacher's lock is held, when the fault may be retried.
	 */
	own = host == vma->vm_mm;	/* its mmap lock is held already */
	layout = down_read_trylock(&r->layout_sem);
	if (!layout || (!own && !mmap_read_trylock(host))) {
		if (layout)
			up_read(&r->layout_sem);
		if ((vmf->flags & FAULT_FLAG_ALLOW_RETRY) &&
		    !(vmf->flags & FAULT_FLAG_RETRY_NOWAIT)) {
			kref_get(&r->ref);
			mmgrab(host);
			mmap_read_unlock(vma->vm_mm);
			down_read(&r->layout_sem);
			if (!own)
				mmap_read_lock(host);
			if (!own)
				mmap_read_unlock(host);
			up_read(&r->layout_sem);
			mmdrop(host);
			msk_region_put(r);
			return VM_FAULT_RETRY;
		}
		/* A host's own fault cannot wait for a change that waits for it. */
		layout = !own;
		if (layout)
			down_read(&r->layout_sem);
		if (!own)
			mmap_read_lock(host);
	}
	hvma = find_vma(host, haddr);
	if (!hvma || hvma->vm_start > haddr || !(hvma->vm_flags & need)) {
		ret = VM_FAULT_SIGSEGV;
		goto out;
	}
	if (is_vm_hugetlb_page(hvma)) {
		ret = msk_fault_pin(r, off);
		if (ret & VM_FAULT_ERROR)
			goto out;
	}
	flags = FAULT_FLAG_REMOTE | (vmf->flags & (FAULT_FLAG_WRITE | FAULT_FLAG_INSTRUCTION));
	ret = handle_mm_fault(hvma, haddr, flags, NULL);
	atomic64_inc(&r->faults);
	if (ret & VM_FAULT_ERROR)
		goto out;
	/* A hole punched meanwhile: the view may map a new page the pin lacks. */
	if (is_vm_hugetlb_page(hvma)) {
		ret = msk_fault_pin(r, off);
		if (ret & VM_FAULT_ERROR)
			goto out;
	}
	/*
	 * The first fault in an unlinked GiB links every GiB the host has (an
	 * offset window: every 2 MiB both sides have tables for).
	 */
	if (w->offset)
		msk_link_offset(w, view, seq, off >> PMD_SHIFT);
	else if (!pud_val(READ_ONCE(w->slots[off >> PUD_SHIFT].link)))
		msk_link_window(w);
	ret = VM_FAULT_NOPAGE;
out:
	if (!own)
		mmap_read_unlock(host);
	if (layout)
		up_read(&r->layout_sem);
	return ret;
}

static vm_fault_t msk_vm_fault(struct vm_fault *vmf)
{
	return msk_fault_common(vmf);
}

#ifdef MSK_HAVE_HUGE_FAULT_ORDER
static vm_fault_t msk_vm_huge_fault(struct vm_fault *vmf, unsigned int order)
#else
static vm_fault_t msk_vm_huge_fault(struct vm_fault *vmf, enum page_entry_size pe_size)
#endif
{
	return msk_fault_common(vmf);
}

/* A store to a present read-only PTE: the host decides, as for any fault. */
static vm_fault_t msk_vm_page_mkwrite(struct vm_fault *vmf)
{
	return msk_fault_common(vmf);
}

static int msk_vm_may_split(struct vm_area_struct *vma, unsigned long addr)
{
	return -EINVAL;
}

static int msk_vm_mremap(struct vm_area_struct *vma)
{
	return -EINVAL;
}

static int msk_vm_mprotect(struct vm_area_struct *vma, unsigned long start,
			   unsigned long end, unsigned long newflags)
{
	return -EINVAL;
}

/* ---- attaching mms ------------------------------------------------------------ */

/*
 * Before core mm walks [start, end) of an attacher (munmap, mremap, madvise,
 * clear_refs, ...) its windows there are unlinked: the walk then finds only
 * the attacher's own tables. Faults wait until the walk is over.
 */
static int msk_mm_invalidate_start(struct mmu_notifier *mn,
				   const struct mmu_notifier_range *range)
{
	struct msk_mm *mmn = container_of(mn, struct msk_mm, mn);
	struct msk_window *w;

	spin_lock(&mmn->lock);
	list_for_each_entry(w, &mmn->windows, mm_node) {
		if (range->start >= w->end || range->end <= w->start)
			continue;
		w->invalidating++;
		msk_unlink_range(w, range->start, range->end);
	}
	spin_unlock(&mmn->lock);
	return 0;
}

static void msk_mm_invalidate_end(struct mmu_notifier *mn,
				  const struct mmu_notifier_range *range)
{
	struct msk_mm *mmn = container_of(mn, struct msk_mm, mn);
	struct msk_window *w;

	spin_lock(&mmn->lock);
	list_for_each_entry(w, &mmn->windows, mm_node)
		if (range->start < w->end && range->end > w->start && w->invalidating) {
			if (!--w->invalidating)
				wake_up_all(&w->wq);
		}
	spin_unlock(&mmn->lock);
}

/* exit_mmap(): unlinked before any table of the mm is walked or freed. */
static void msk_mm_release(struct mmu_notifier *mn, struct mm_struct *mm)
{
	struct msk_mm *mmn = container_of(mn, struct msk_mm, mn);
	struct msk_window *w;

	spin_lock(&mmn->lock);
	list_for_each_entry(w, &mmn->windows, mm_node) {
		w->invalidating++;
		msk_unlink_range(w, w->start, w->end);
	}
	spin_unlock(&mmn->lock);
}

static struct mmu_notifier *msk_mm_alloc(struct mm_struct *mm)
{
	struct msk_mm *mmn = kzalloc(sizeof(*mmn), GFP_KERNEL);

	if (!mmn)
		return ERR_PTR(-ENOMEM);
	spin_lock_init(&mmn->lock);
	INIT_LIST_HEAD(&mmn->windows);
	return &mmn->mn;
}

static void msk_mm_free(struct mmu_notifier *mn)
{
	kfree(container_of(mn, struct msk_mm, mn));
}

static const struct mmu_notifier_ops msk_mm_ops = {
	.invalidate_range_start = msk_mm_invalidate_start,
	.invalidate_range_end = msk_mm_invalidate_end,
	.release = msk_mm_release,
	.alloc_notifier = msk_mm_alloc,
	.free_notifier = msk_mm_free,
};

/* Caller holds r->windows_lock: which view w shows. */
static int msk_view_of(struct msk_region *r, struct msk_window *w)
{
	return w->writable && (!r->handoff || w->mm == r->writer) ? 0 : 1;
}

/*
 * Caller holds the host's mmap lock and r->windows_lock. Points w's linked
 * slots at the view it must show now; a slot whose table the host does not
 * have yet is unlinked. Returns true if the TLBs need a flush.
 */
static bool msk_window_flip(struct msk_region *r, struct msk_window *w)
{
	int view = msk_view_of(r, w);
	bool flush = false;
	unsigned long i;
	pud_t *hpud, *pud;

	spin_lock(&w->mm->page_table_lock);
	if (view == w->view)
		goto out;
	w->view = view;
	if (w->offset) {	/* faults link the other view */
		flush = msk_unlink_pmd_range(w, 0, w->end - w->start, false);
		goto out;
	}
	for (i = 0; i < (w->end - w->start) >> PUD_SHIFT; i++) {
		if (!pud_val(w->slots[i].link))
			continue;
		flush = true;
		hpud = msk_pmd_table_pud(r->host_mm, r->view[view] + i * PUD_SIZE);
		pud = msk_window_pud(w->mm, w->start + i * PUD_SIZE);
		if (hpud && pud && pud_val(*pud) == pud_val(w->slots[i].link)) {
			set_pud(pud, *hpud);
			w->slots[i].link = *hpud;
		} else {
			msk_unlink_slot(w, i);
		}
	}
out:
	spin_unlock(&w->mm->page_table_lock);
	return flush;
}

/* The LOCK/UNLOCK handoff: one entry per GiB and window changes view. */
static int msk_set_writer(struct msk_region *r, s32 pid)
{
	struct mm_struct *mm = NULL, *old;
	struct task_struct *task;
	struct msk_window *w;
	bool flush = false;

	if (pid < -1)
		return -EINVAL;
	if (pid > 0) {
		struct pid *p = find_get_pid(pid);

		task = get_pid_task(p, PIDTYPE_PID);
		put_pid(p);
		if (!task)
			return -ESRCH;
		mm = get_task_mm(task);
		put_task_struct(task);
		if (!mm)
			return -ESRCH;
		mmgrab(mm);
		mmput(mm);
	}
	mmap_read_lock(r->host_mm);
	spin_lock(&r->windows_lock);
	old = r->writer;
	r->writer = mm;
	r->handoff = pid >= 0;
	list_for_each_entry(w, &r->windows, region_node)
		flush |= msk_window_flip(r, w);
	spin_unlock(&r->windows_lock);
	mmap_read_unlock(r->host_mm);
	if (flush)
		msk_flush_all_cpus();
	if (old)
		mmdrop(old);
	return 0;
}

/*
 * Registers w with its mm's notifier, which unlinks it before core mm walks
 * it. Caller holds w->mm's mmap lock for writing. Registration fails while
 * a signal is pending (mm_take_all_locks()), as it may in fork(): the
 * window then stays unlinked and its first fault registers it (see
 * msk_fault_register()). Returns 0 or the error.
 */
static int msk_window_register(struct msk_window *w)
{
	struct mmu_notifier *mn = mmu_notifier_get_locked(&msk_mm_ops, w->mm);

	if (IS_ERR(mn))
		return PTR_ERR(mn);
	spin_lock(&w->mm->page_table_lock);
	w->mmn = container_of(mn, struct msk_mm, mn);
	spin_unlock(&w->mm->page_table_lock);
	spin_lock(&w->mmn->lock);
	list_add(&w->mm_node, &w->mmn->windows);
	spin_unlock(&w->mmn->lock);
	return 0;
}

/* A window for vma, whose mm's mmap lock is held for writing. */
static struct msk_window *msk_window_new(struct vm_area_struct *vma, struct msk_region *r)
{
	unsigned long nr = (vma->vm_end - vma->vm_start) >> PUD_SHIFT;
	struct msk_window *w;

	w = kzalloc(sizeof(*w), GFP_KERNEL);
	if (!w)
		return NULL;
	w->offset = !IS_ALIGNED(vma->vm_start, PUD_SIZE);
	if (w->offset)
		w->pmd_links = kvcalloc(BITS_TO_LONGS((vma->vm_end - vma->vm_start) >> PMD_SHIFT),
					sizeof(long), GFP_KERNEL);
	else
		w->slots = kvcalloc(nr, sizeof(*w->slots), GFP_KERNEL);
	if (!w->slots && !w->pmd_links) {
		kfree(w);
		return NULL;
	}
	w->region = r;
	w->mm = vma->vm_mm;
	w->start = vma->vm_start;
	w->end = vma->vm_end;
	w->writable = vma->vm_flags & VM_WRITE;
	init_waitqueue_head(&w->wq);
	kref_get(&r->ref);
	atomic_inc(&r->windows_count);
	spin_lock(&r->windows_lock);
	w->view = msk_view_of(r, w);
	list_add(&w->region_node, &r->windows);
	spin_unlock(&r->windows_lock);
	msk_window_register(w);
	return w;
}

static void msk_window_free(struct msk_window *w)
{
	if (w->mmn) {
		spin_lock(&w->mmn->lock);
		msk_unlink_range(w, w->start, w->end);
		list_del(&w->mm_node);
		spin_unlock(&w->mmn->lock);
	}
	spin_lock(&w->region->windows_lock);
	list_del(&w->region_node);
	spin_unlock(&w->region->windows_lock);
	if (w->mmn)
		mmu_notifier_put(&w->mmn->mn);
	atomic_dec(&w->region->windows_count);
	msk_region_put(w->region);
	kvfree(w->slots);
	kvfree(w->pmd_links);
	kfree(w);
}

/* fork() and mremap()'s copy: the new VMA is a window of its own. */
static void msk_vm_open(struct vm_area_struct *vma)
{
	struct msk_window *w = vma->vm_private_data;
	bool fork = w && w->mm != vma->vm_mm;

	vma->vm_private_data = w ? msk_window_new(vma, w->region) : NULL;
	/*
	 * mremap() moves the old window's own tables to the new place right
	 * after this: linking there now would be in their way.
	 */
	if (vma->vm_private_data && fork)
		msk_link_new_window(vma->vm_private_data);
}

static void msk_vm_close(struct vm_area_struct *vma)
{
	struct msk_window *w = vma->vm_private_data;

	if (w)
		msk_window_free(w);
	vma->vm_private_data = NULL;
}

#ifdef CONFIG_NUMA
/*
 * Windows are not NUMA-balanced: the scanner's change_protection() reads a
 * PUD entry before it calls the invalidation that unlinks it. A policy
 * without MPOL_F_MOF keeps task_numa_work() away; the host's own views are
 * balanced as any mapping of the host is.
 */
static struct mempolicy msk_window_policy = {
	.refcnt = ATOMIC_INIT(1),
	.mode = MPOL_LOCAL,
};

#ifdef MSK_HAVE_GET_POLICY_ILX
static struct mempolicy *msk_vm_get_policy(struct vm_area_struct *vma, unsigned long addr,
					   pgoff_t *ilx)
#else
static struct mempolicy *msk_vm_get_policy(struct vm_area_struct *vma, unsigned long addr)
#endif
{
	return &msk_window_policy;
}
#endif

static const struct vm_operations_struct msk_vm_ops = {
#ifdef CONFIG_NUMA
	.get_policy = msk_vm_get_policy,
#endif
	.open = msk_vm_open,
	.close = msk_vm_close,
	.fault = msk_vm_fault,
	.huge_fault = msk_vm_huge_fault,
	.page_mkwrite = msk_vm_page_mkwrite,
	.may_split = msk_vm_may_split,
	.mremap = msk_vm_mremap,
	.mprotect = msk_vm_mprotect,
};

/* ---- region files ------------------------------------------------------------ */

static struct msk_region *msk_region_of(struct file *file)
{
	return file_inode(file)->i_private;
}

static int msk_region_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct msk_region *r = msk_region_of(file);
	struct msk_window *w;

	if (!(vma->vm_flags & VM_MAYSHARE) || vma->vm_pgoff || READ_ONCE(r->sealed) ||
	    !READ_ONCE(r->size) || vma->vm_end - vma->vm_start != READ_ONCE(r->size) ||
	    !IS_ALIGNED(vma->vm_start, PMD_SIZE))
		return -EINVAL;
	if (vma->vm_flags & VM_EXEC)
		return -EPERM;	/* see msk_view_prot() */
	/*
	 * Not expandable, so not mlock()ed nor collapsed by khugepaged; huge
	 * faults come to msk_vm_huge_fault() before core mm allocates a table.
	 */
	msk_vm_flags_set(vma, VM_DONTEXPAND | VM_NORESERVE | VM_HUGEPAGE);
	msk_vm_flags_clear(vma, VM_MAYEXEC);
	w = msk_window_new(vma, r);
	if (!w)
		return -ENOMEM;
	vma->vm_ops = &msk_vm_ops;
	vma->vm_private_data = w;
	msk_link_new_window(w);
	return 0;
}

static unsigned long msk_unmapped_area(unsigned long addr, unsigned long len,
				       unsigned long flags)
{
#ifdef MSK_HAVE_MM_GET_UNMAPPED_AREA
	return mm_get_unmapped_area(current->mm, NULL, addr, len, 0, flags);
#else
	return current->mm->get_unmapped_area(NULL, addr, len, 0, flags);
#endif
}

static unsigned long msk_region_get_unmapped_area(struct file *file, unsigned long addr,
						  unsigned long len, unsigned long pgoff,
						  unsigned long flags)
{
	unsigned long found;

	if (flags & MAP_FIXED)	/* 2 MiB aligned: an offset window */
		return IS_ALIGNED(addr, PMD_SIZE) ? addr : -EINVAL;
	if (len > TASK_SIZE - PUD_SIZE)
		return -ENOMEM;
	if (addr && IS_ALIGNED(addr, PUD_SIZE)) {
		found = msk_unmapped_area(addr, len, flags);
		if (!IS_ERR_VALUE(found) && found == addr)
			return addr;
	}
	found = msk_unmapped_area(0, len + PUD_SIZE, flags);
	if (IS_ERR_VALUE(found))
		return found;
	return ALIGN(found, PUD_SIZE);
}

static long msk_region_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct msk_region *r = msk_region_of(file);
	void __user *uarg = (void __user *)arg;
	struct msharefs_kmod_range range;
	struct msharefs_kmod_map_file mf;
	struct msharefs_kmod_stats stats;
	u64 size;
	long ret;

	if (cmd == MSHAREFS_KMOD_STATS) {
		msk_region_stats(r, &stats);
		return copy_to_user(uarg, &stats, sizeof(stats)) ? -EFAULT : 0;
	}
	if (cmd != MSHAREFS_KMOD_MAP && cmd != MSHAREFS_KMOD_UNMAP &&
	    cmd != MSHAREFS_KMOD_PROTECT && cmd != MSHAREFS_KMOD_SET_SIZE &&
	    cmd != MSHAREFS_KMOD_SEAL && cmd != MSHAREFS_KMOD_MAP_FILE &&
	    cmd != MSHAREFS_KMOD_SET_WRITER)
		return -ENOTTY;
	if (!(file->f_mode & FMODE_WRITE))
		return -EBADF;
	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	if (cmd == MSHAREFS_KMOD_SEAL) {
		WRITE_ONCE(r->sealed, true);
		return 0;
	}
	if (cmd == MSHAREFS_KMOD_SET_WRITER) {
		s32 pid;

		if (copy_from_user(&pid, uarg, sizeof(pid)))
			return -EFAULT;
		if (!READ_ONCE(r->size))
			return -EINVAL;
		return msk_set_writer(r, pid);
	}
	if (cmd == MSHAREFS_KMOD_SET_SIZE) {
		if (copy_from_user(&size, uarg, sizeof(size)))
			return -EFAULT;
		mutex_lock(&r->lock);
		ret = msk_region_set_size(r, size);
		if (!ret)
			file_inode(file)->i_size = size;
		mutex_unlock(&r->lock);
		return ret;
	}
	if (cmd == MSHAREFS_KMOD_MAP_FILE) {
		if (copy_from_user(&mf, uarg, sizeof(mf)))
			return -EFAULT;
		range = (struct msharefs_kmod_range){ mf.offset, mf.size, mf.prot, 0 };
	} else if (copy_from_user(&range, uarg, sizeof(range))) {
		return -EFAULT;
	}
	mutex_lock(&r->lock);
	ret = r->size ? msk_check_range(r, &range) : -EINVAL;
	if (ret)
		;
	else if (cmd == MSHAREFS_KMOD_MAP_FILE)
		ret = msk_map_file(r, &mf);
	else if (cmd == MSHAREFS_KMOD_MAP)
		ret = msk_map_object(r, r->anon, range.offset, range.size,
				     range.offset >> PAGE_SHIFT, range.prot);
	else if (cmd == MSHAREFS_KMOD_UNMAP)
		ret = msk_unmap(r, &range);
	else
		ret = msk_protect(r, &range);
	mutex_unlock(&r->lock);
	return ret;
}

/* msync() of a window: the files mapped into the region are written back. */
static int msk_region_fsync(struct file *file, loff_t start, loff_t end, int datasync)
{
	struct msk_region *r = msk_region_of(file);
	struct msk_map *m;
	int err = 0, ret;

	mutex_lock(&r->lock);
	list_for_each_entry(m, &r->maps, node) {
		if (m->file == r->anon)
			continue;
		ret = vfs_fsync(m->file, datasync);
		if (ret && !err)
			err = ret;
	}
	mutex_unlock(&r->lock);
	return err;
}

static const struct file_operations msk_region_fops = {
	.owner = THIS_MODULE,
	.mmap = msk_region_mmap,
	.fsync = msk_region_fsync,
	.get_unmapped_area = msk_region_get_unmapped_area,
	.unlocked_ioctl = msk_region_ioctl,
};

/* ---- the region filesystem and /dev/msharefs_kmod ----------------------------- */

/*
 * Region files live on a private pseudo filesystem: regular files whose
 * path can be opened again (FUSE passthrough reopens its backing file). The
 * inode holds a reference on its region, dropped when the inode is evicted,
 * so any file of it (an O_PATH one too) keeps the region.
 */
#define MSHAREFS_KMOD_MAGIC	0x6d73686b	/* "mshk" */

static struct vfsmount *msk_mnt;

static void msk_evict_inode(struct inode *inode)
{
	truncate_inode_pages_final(&inode->i_data);
	clear_inode(inode);
	if (inode->i_private)
		msk_region_put(inode->i_private);
}

static const struct super_operations msk_sops = {
	.statfs = simple_statfs,
	.evict_inode = msk_evict_inode,
};

static int msk_init_fs_context(struct fs_context *fc)
{
	struct pseudo_fs_context *ctx = init_pseudo(fc, MSHAREFS_KMOD_MAGIC);

	if (!ctx)
		return -ENOMEM;
	ctx->ops = &msk_sops;
	return 0;
}

static struct file_system_type msk_fs_type = {
	.name = "msharefs_kmod",
	.init_fs_context = msk_init_fs_context,
	.kill_sb = kill_anon_super,
};

/*
 * Installs a descriptor of a new region file, which takes over the caller's
 * reference on r (dropped here on failure).
 */
static int msk_region_install(struct msk_region *r)
{
	struct inode *inode;
	struct file *file;
	int fd;

	fd = get_unused_fd_flags(O_CLOEXEC);
	if (fd < 0) {
		msk_region_put(r);
		return fd;
	}
	inode = alloc_anon_inode(msk_mnt->mnt_sb);
	if (IS_ERR(inode)) {
		put_unused_fd(fd);
		msk_region_put(r);
		return PTR_ERR(inode);
	}
	inode->i_mode = S_IFREG | 0600;
	inode->i_fop = &msk_region_fops;
	inode->i_private = r;		/* from here on, iput() drops r */
	inode->i_size = r->size;
	WRITE_ONCE(r->ino, inode->i_ino);
	/* The file's f_op reference, dropped by __fput(). */
	__module_get(THIS_MODULE);
	file = alloc_file_pseudo(inode, msk_mnt, "msharefs_region", O_RDWR, &msk_region_fops);
	if (IS_ERR(file)) {
		module_put(THIS_MODULE);
		put_unused_fd(fd);
		iput(inode);
		return PTR_ERR(file);
	}
	fd_install(fd, file);
	return fd;
}

static long msk_dev_create(void __user *uarg)
{
	struct msharefs_kmod_create c;
	struct msk_region *r;
	int err;

	if (copy_from_user(&c, uarg, sizeof(c)))
		return -EFAULT;
	if (c.flags || c.pad)
		return -EINVAL;
	r = msk_region_alloc();
	if (IS_ERR(r))
		return PTR_ERR(r);
	err = 0;
	if (c.size) {
		mutex_lock(&r->lock);
		err = msk_region_set_size(r, c.size);
		mutex_unlock(&r->lock);
	}
	if (err) {
		msk_region_put(r);
		return err;
	}
	return msk_region_install(r);
}

static long msk_dev_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	if (cmd == MSHAREFS_KMOD_CREATE)
		return msk_dev_create((void __user *)arg);
	return -ENOTTY;
}

static const struct file_operations msk_dev_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = msk_dev_ioctl,
};

static struct miscdevice msk_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "msharefs_kmod",
	.fops = &msk_dev_fops,
	.mode = 0600,
};

static bool msk_made_mount_point;

static int __init msk_init(void)
{
	int err;

	msk_worker = kthread_create_worker(0, "msharefs_host");
	if (IS_ERR(msk_worker))
		return PTR_ERR(msk_worker);
	msk_mnt = kern_mount(&msk_fs_type);
	if (IS_ERR(msk_mnt)) {
		err = PTR_ERR(msk_mnt);
		goto fail_worker;
	}
	err = misc_register(&msk_dev);
	if (err)
		goto fail_mount;
	if (!proc_create_single("msharefs_kmod", 0400, NULL, msk_proc_show)) {
		err = -ENOMEM;
		goto fail_dev;
	}
	/* /sys/fs/mshare, where msharefsd mounts; it may exist already. */
	msk_made_mount_point = !sysfs_create_mount_point(fs_kobj, "mshare");
	return 0;
fail_dev:
	misc_deregister(&msk_dev);
fail_mount:
	kern_unmount(msk_mnt);
fail_worker:
	kthread_destroy_worker(msk_worker);
	return err;
}

static void __exit msk_exit(void)
{
	if (msk_made_mount_point)
		sysfs_remove_mount_point(fs_kobj, "mshare");
	remove_proc_entry("msharefs_kmod", NULL);
	misc_deregister(&msk_dev);
	kern_unmount(msk_mnt);
	kthread_destroy_worker(msk_worker);
	/* mmu_notifier_put() frees notifiers after an SRCU grace period. */
	mmu_notifier_synchronize();
}

module_init(msk_init);
module_exit(msk_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("msharefs: shared page tables for mshare regions");
