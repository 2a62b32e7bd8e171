// SPDX-License-Identifier: GPL-2.0
/*
 * msharefs_kmod: page-table sharing for msharefs regions.
 *
 * A region owns its memory (one page per 4 KiB of mapped range, kept in an
 * xarray) and its page tables: one PMD table per PUD-sized (1 GiB) chunk and
 * the PTE tables below them. Every window (an mmap() of the region's file)
 * points the attaching process's PUD entries at those PMD tables, so an
 * extra attacher costs no page-table memory and sees every populated page
 * without faulting on it.
 *
 * Core mm code must never zap or free the shared tables through an
 * attacher. Each attaching mm carries an mmu notifier: before any range of a
 * window is invalidated (munmap, exit, madvise, ...) the notifier unlinks the
 * window's PUD entries and flushes that mm's TLB, so the walkers that follow
 * find nothing of ours; for invalidations that keep the window it relinks
 * them at invalidate_range_end. The xarray, not the PTEs, is the truth about
 * which page holds what, so nothing is lost if a shared PTE is ever cleared.
 *
 * Windows refuse mprotect, splits (partial munmap) and mremap; the region's
 * own MAP/UNMAP/PROTECT change the shared entries once and flush the TLBs of
 * every attached mm before returning.
 *
 * Locking, outermost first:
 *   region->lock (mutex)      layout changes, pages, tables, the region's
 *                             windows (the layout is also read under RCU);
 *   mn->lock (spinlock)       the windows of one mm;
 *   mm->page_table_lock       an attacher's PUD entries.
 * The shared PTE tables are written under region->lock; their split ptlock
 * is initialised so that core walkers (smaps, pagemap, pfn_mkwrite) can lock
 * them like any PTE table.
 */

#include <linux/file.h>
#include <linux/fs_context.h>
#include <linux/magic.h>
#include <linux/pseudo_fs.h>
#include <linux/fs.h>
#include <linux/kobject.h>
#include <linux/kprobes.h>
#include <linux/maple_tree.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/mman.h>
#include <linux/mmu_notifier.h>
#include <linux/module.h>
#include <linux/pagemap.h>
#include <linux/moduleparam.h>
#include <linux/pgtable.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <linux/shmem_fs.h>
#include <linux/slab.h>
#include <linux/sysfs.h>
#include <linux/uaccess.h>
#include <linux/xarray.h>
#include <asm/pgalloc.h>
#include <asm/tlbflush.h>

#include "msharefs_kmod.h"

#define MSK_MAX_SIZE	BIT_ULL(46)

/* Kernel functions this module needs that are not exported. */
static void (*msk_flush_tlb_mm_range)(struct mm_struct *mm, unsigned long start,
				      unsigned long end, unsigned int stride_shift,
				      bool freed_tables);
static int (*msk_pud_alloc)(struct mm_struct *mm, p4d_t *p4d, unsigned long address);
static int (*msk_p4d_alloc)(struct mm_struct *mm, pgd_t *pgd, unsigned long address);

struct msk_region {
	struct mutex lock;	/* see "Locking" above */
	struct kref ref;
	u64 size;
	unsigned long nr_pages;
	unsigned int nr_chunks;
	/* page ranges -> xa_mk_value(PROT_*), or a struct msk_file_map */
	struct maple_tree layout;
	struct list_head file_maps;	/* every msk_file_map, freed with r */
	struct xarray pages;	/* page index -> struct page */
	pmd_t **pmd_tables;	/* per chunk: the shared PMD table */
	struct list_head windows;
	bool sealed;		/* no new windows: the region was torn down */
	u64 id;
	unsigned long ino;	/* of the region's file, as /proc/PID/maps shows it */
	struct list_head node;	/* in msk_regions */
	unsigned long mapped_pages;	/* pages the layout maps */
	u64 resident_pages;
	u64 table_pages;
	u64 nr_windows;
	u64 faults;
};

/*
 * A file mapped into a region. Layout entries point at it for each range it
 * backs (a PROTECT of part of it stores a copy with the new prot); page index
 * i shows file page pgoff + (i - first), however the range was split.
 */
struct msk_file_map {
	struct list_head node;
	struct file *file;
	unsigned long first;
	pgoff_t pgoff;
	int prot;
};

/* Marks the pages of r->pages that are a file's and writable: dirtied when let go. */
#define MSK_FILE_DIRTY	XA_MARK_1

/* One per attaching mm; holds that mm's windows. */
struct msk_mm {
	struct mmu_notifier mn;
	spinlock_t lock;	/* guards windows */
	struct list_head windows;
};

struct msk_window {
	struct msk_region *region;
	struct mm_struct *mm;
	struct msk_mm *owner;
	unsigned long start;
	unsigned long end;
	bool unmapping;			/* under owner->lock */
	struct list_head region_node;	/* under region->lock */
	struct list_head mm_node;	/* under owner->lock */
	struct list_head parked;	/* private PMD tables replaced by ours */
};

/* An attacher's own (empty) PMD table, replaced by a shared one. */
struct msk_parked_table {
	struct list_head node;
	pmd_t *table;
};

/* ---- symbols ------------------------------------------------------------ */

static unsigned long msk_lookup(const char *name)
{
	static unsigned long (*lookup_name)(const char *name);
	struct kprobe kp = { .symbol_name = "kallsyms_lookup_name" };

	if (!lookup_name) {
		if (register_kprobe(&kp))
			return 0;
		lookup_name = (void *)kp.addr;
		unregister_kprobe(&kp);
	}
	return lookup_name(name);
}

static int msk_resolve_symbols(void)
{
	msk_flush_tlb_mm_range = (void *)msk_lookup("flush_tlb_mm_range");
	msk_pud_alloc = (void *)msk_lookup("__pud_alloc");
	msk_p4d_alloc = (void *)msk_lookup("__p4d_alloc");
	if (!msk_flush_tlb_mm_range || !msk_pud_alloc || !msk_p4d_alloc)
		return -ENOENT;
	return 0;
}

static void msk_flush(struct mm_struct *mm, unsigned long start, unsigned long end,
		      bool tables)
{
	msk_flush_tlb_mm_range(mm, start, end, PAGE_SHIFT, tables);
}

/* ---- regions -------------------------------------------------------------- */

static pgprot_t msk_pgprot(int prot)
{
	unsigned long flags = VM_SHARED;

	if (prot & PROT_READ)
		flags |= VM_READ;
	if (prot & PROT_WRITE)
		flags |= VM_READ | VM_WRITE;
	if (prot & PROT_EXEC)
		flags |= VM_READ | VM_EXEC;
	return vm_get_page_prot(flags);
}

static void msk_region_put(struct msk_region *r);

/* A user PMD table page, set up like the kernel's own (split lock, stats). */
static pmd_t *msk_alloc_pmd_table(void)
{
#ifdef MSK_HAVE_PTDESC
	struct ptdesc *ptdesc = pagetable_alloc(GFP_PGTABLE_USER, 0);

	if (!ptdesc)
		return NULL;
	if (!pagetable_pmd_ctor(ptdesc)) {
		pagetable_free(ptdesc);
		return NULL;
	}
	return ptdesc_address(ptdesc);
#else
	struct page *page = alloc_page(GFP_PGTABLE_USER);

	if (!page)
		return NULL;
	if (!pgtable_pmd_page_ctor(page)) {
		__free_page(page);
		return NULL;
	}
	return page_address(page);
#endif
}

static void msk_vm_flags_set(struct vm_area_struct *vma, unsigned long flags)
{
#ifdef MSK_HAVE_VM_FLAGS_SET
	vm_flags_set(vma, flags);
#else
	vma->vm_flags |= flags;
#endif
}

/*
 * Every region, for /sys/module/msharefs_kmod/parameters/regions_with_memory:
 * the ids of the regions that have memory mapped now (what a test or an
 * operator checks to see memory freed).
 */
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

module_param_cb(regions_with_memory, &msk_regions_with_memory_ops, NULL, 0444);
MODULE_PARM_DESC(regions_with_memory, "ids of the regions that have memory mapped now");

/*
 * /proc/msharefs_kmod: one line per region. Takes msk_regions_lock only; the
 * figures are written under each region's lock and read here with
 * READ_ONCE, so a line may mix figures from either side of a change.
 */
static int msk_proc_show(struct seq_file *m, void *v)
{
	struct msk_region *r;

	seq_puts(m, "id inode size resident_bytes table_bytes windows faults\n");
	mutex_lock(&msk_regions_lock);
	list_for_each_entry(r, &msk_regions, node)
		seq_printf(m, "%llu %lu %llu %llu %llu %llu %llu\n", r->id, READ_ONCE(r->ino),
			   READ_ONCE(r->size), READ_ONCE(r->resident_pages) << PAGE_SHIFT,
			   READ_ONCE(r->table_pages) << PAGE_SHIFT, READ_ONCE(r->nr_windows),
			   READ_ONCE(r->faults));
	mutex_unlock(&msk_regions_lock);
	return 0;
}

static struct msk_region *msk_region_alloc(void)
{
	struct msk_region *r = kzalloc(sizeof(*r), GFP_KERNEL);

	if (!r)
		return NULL;
	mutex_init(&r->lock);
	kref_init(&r->ref);
	xa_init(&r->pages);
	mt_init(&r->layout);
	INIT_LIST_HEAD(&r->file_maps);
	INIT_LIST_HEAD(&r->windows);
	__module_get(THIS_MODULE);	/* dropped by msk_region_free() */
	mutex_lock(&msk_regions_lock);
	r->id = ++msk_next_region_id;
	list_add_tail(&r->node, &msk_regions);
	mutex_unlock(&msk_regions_lock);
	return r;
}

/*
 * Gives an unsized region its size: one PMD table per chunk,
 * which exist for the region's life so that windows link them at once.
 * Caller holds r->lock (or has r to itself).
 */
static int msk_region_set_size(struct msk_region *r, u64 size)
{
	unsigned int chunk;

	if (r->size)
		return -EBUSY;
	if (!size || !IS_ALIGNED(size, PUD_SIZE) || size > MSK_MAX_SIZE)
		return -EINVAL;
	r->pmd_tables = kcalloc(size >> PUD_SHIFT, sizeof(*r->pmd_tables), GFP_KERNEL);
	if (!r->pmd_tables)
		goto fail;
	r->nr_chunks = size >> PUD_SHIFT;
	for (chunk = 0; chunk < r->nr_chunks; chunk++) {
		r->pmd_tables[chunk] = msk_alloc_pmd_table();
		if (!r->pmd_tables[chunk])
			goto fail;
		r->table_pages++;
	}
	r->nr_pages = size >> PAGE_SHIFT;
	WRITE_ONCE(r->size, size);
	return 0;
fail:
	for (chunk = 0; r->pmd_tables && chunk < r->nr_chunks; chunk++)
		if (r->pmd_tables[chunk])
			pmd_free(NULL, r->pmd_tables[chunk]);
	r->table_pages = 0;
	r->nr_chunks = 0;
	kfree(r->pmd_tables);
	r->pmd_tables = NULL;
	return -ENOMEM;
}

/*
 * Caller holds r->lock. Returns the shared PTE slot of page index, with the
 * PTE table allocated; NULL on allocation failure.
 */
static pte_t *msk_pte_slot(struct msk_region *r, unsigned long index)
{
	unsigned long off = index << PAGE_SHIFT;
	pmd_t *pmd = r->pmd_tables[off >> PUD_SHIFT] + pmd_index(off);
	pgtable_t pte_table;

	if (pmd_none(*pmd)) {
		pte_table = __pte_alloc_one(NULL, GFP_PGTABLE_USER);
		if (!pte_table)
			return NULL;
		r->table_pages++;
		pmd_populate(NULL, pmd, pte_table);
	}
	return pte_offset_kernel(pmd, off);
}

/* Caller holds r->lock. The shared PTE of index if its table exists. */
static pte_t *msk_pte_lookup(struct msk_region *r, unsigned long index)
{
	unsigned long off = index << PAGE_SHIFT;
	pmd_t *pmd_table = r->pmd_tables[off >> PUD_SHIFT];
	pmd_t *pmd;

	if (!pmd_table)
		return NULL;
	pmd = pmd_table + pmd_index(off);
	if (pmd_none(*pmd))
		return NULL;
	return pte_offset_kernel(pmd, off);
}

/* Caller holds r->lock: make every window see the change of [off, end). */
static void msk_flush_windows(struct msk_region *r, u64 off, u64 end)
{
	struct msk_window *w;

	list_for_each_entry(w, &r->windows, region_node)
		msk_flush(w->mm, w->start + off, w->start + end, false);
}

/*
 * Lets go of a page of r->pages: a data page is freed, a file page's
 * reference is dropped, dirtied first if it was writable.
 */
static void msk_release_page(struct msk_region *r, unsigned long index, struct page *page)
{
	if (xa_get_mark(&r->pages, index, MSK_FILE_DIRTY))
		set_page_dirty_lock(page);
	put_page(page);
}

static void msk_region_free(struct kref *ref)
{
	struct msk_region *r = container_of(ref, struct msk_region, ref);
	struct msk_file_map *fm, *next;
	unsigned long index;
	struct page *page;
	unsigned int chunk, i;

	xa_for_each(&r->pages, index, page)
		msk_release_page(r, index, page);
	xa_destroy(&r->pages);
	list_for_each_entry_safe(fm, next, &r->file_maps, node) {
		fput(fm->file);
		kfree(fm);
	}
	for (chunk = 0; chunk < r->nr_chunks; chunk++) {
		pmd_t *pmd_table = r->pmd_tables[chunk];

		if (!pmd_table)
			continue;
		for (i = 0; i < PTRS_PER_PMD; i++)
			if (!pmd_none(pmd_table[i]))
				pte_free(NULL, pmd_pgtable(pmd_table[i]));
		pmd_free(NULL, pmd_table);
	}
	kfree(r->pmd_tables);
	mtree_destroy(&r->layout);
	mutex_lock(&msk_regions_lock);
	list_del(&r->node);
	mutex_unlock(&msk_regions_lock);
	kfree(r);
	module_put(THIS_MODULE);
}

static void msk_region_put(struct msk_region *r)
{
	kref_put(&r->ref, msk_region_free);
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

/* The protection of page index, or -1 where no mapping is. Lock free. */
static int msk_prot_of(void *entry)
{
	if (!entry)
		return -1;
	if (xa_is_value(entry))
		return (int)xa_to_value(entry);
	return ((struct msk_file_map *)entry)->prot;
}

static int msk_prot_at(struct msk_region *r, unsigned long index)
{
	return msk_prot_of(mtree_load(&r->layout, index));
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

static int msk_set_layout(struct msk_region *r, unsigned long first, unsigned long last, int prot)
{
	return mtree_store_range(&r->layout, first, last - 1,
				 prot < 0 ? NULL : xa_mk_value(prot), GFP_KERNEL);
}

static long msk_map(struct msk_region *r, const struct msharefs_kmod_range *a)
{
	unsigned long first = a->offset >> PAGE_SHIFT;
	unsigned long last = (a->offset + a->size) >> PAGE_SHIFT;
	int err;

	if (msk_mapped_in(r, first, last))
		return -EEXIST;
	err = msk_set_layout(r, first, last, a->prot);
	if (!err)
		WRITE_ONCE(r->mapped_pages, r->mapped_pages + last - first);
	return err;
}

/*
 * Caller holds r->lock. Every present shared PTE maps a page of r->pages, so
 * walking the resident pages of a range finds all of its PTEs.
 */
static long msk_unmap(struct msk_region *r, const struct msharefs_kmod_range *a)
{
	unsigned long first = a->offset >> PAGE_SHIFT;
	unsigned long last = (a->offset + a->size) >> PAGE_SHIFT;
	unsigned long mapped = msk_mapped_in(r, first, last), i;
	struct page *page;
	pte_t *pte;
	int err;

	err = msk_set_layout(r, first, last, -1);
	if (err)
		return err;
	WRITE_ONCE(r->mapped_pages, r->mapped_pages - mapped);
	xa_for_each_range(&r->pages, i, page, first, last - 1) {
		pte = msk_pte_lookup(r, i);
		if (pte)
			pte_clear(NULL, 0, pte);
	}
	msk_flush_windows(r, a->offset, a->offset + a->size);
	xa_for_each_range(&r->pages, i, page, first, last - 1) {
		msk_release_page(r, i, page);
		xa_erase(&r->pages, i);
		r->resident_pages--;
		cond_resched();
	}
	return 0;
}

/*
 * Caller holds r->lock. Stores prot over [first, last): value entries are
 * replaced, file entries by a copy that keeps the file's page offsets.
 */
static int msk_reprotect(struct msk_region *r, unsigned long first, unsigned long last, int prot)
{
	MA_STATE(mas, &r->layout, first, first);
	struct msk_file_map *fm, *copy;
	unsigned long from, to;
	void *entry;
	int err = 0;

	for (;;) {
		rcu_read_lock();
		entry = mas_find(&mas, last - 1);
		rcu_read_unlock();
		if (!entry)
			return 0;
		from = max(mas.index, first);
		to = min(mas.last, last - 1);
		if (xa_is_value(entry)) {
			err = mtree_store_range(&r->layout, from, to, xa_mk_value(prot),
						GFP_KERNEL);
		} else {
			fm = entry;
			copy = kmemdup(fm, sizeof(*fm), GFP_KERNEL);
			if (!copy)
				return -ENOMEM;
			copy->prot = prot;
			get_file(copy->file);
			list_add(&copy->node, &r->file_maps);
			err = mtree_store_range(&r->layout, from, to, copy, GFP_KERNEL);
		}
		if (err || to >= last - 1)
			return err;
		mas_set(&mas, to + 1);
	}
}

static long msk_protect(struct msk_region *r, const struct msharefs_kmod_range *a)
{
	unsigned long first = a->offset >> PAGE_SHIFT;
	unsigned long last = (a->offset + a->size) >> PAGE_SHIFT, i;
	struct page *page;
	pte_t *pte;
	int err;

	if (msk_mapped_in(r, first, last) != last - first)
		return -ENOMEM;
	err = msk_reprotect(r, first, last, a->prot);
	if (err)
		return err;
	xa_for_each_range(&r->pages, i, page, first, last - 1) {
		pte = msk_pte_lookup(r, i);
		if (!pte || pte_none(ptep_get(pte)))
			continue;
		if (!(a->prot & (PROT_READ | PROT_WRITE | PROT_EXEC)))
			pte_clear(NULL, 0, pte);
		else
			set_pte(pte, pte_mkspecial(pte_mkyoung(mk_pte(page, msk_pgprot(a->prot)))));
	}
	msk_flush_windows(r, a->offset, a->offset + a->size);
	return 0;
}

static bool msk_is_shmem(struct file *file)
{
	return file_inode(file)->i_sb->s_magic == TMPFS_MAGIC;
}

/* The page-cache page of a file at pgoff, with a reference; ERR_PTR past EOF. */
static struct page *msk_file_page(struct file *file, pgoff_t pgoff)
{
	struct address_space *mapping = file->f_mapping;
	struct folio *folio;
	struct page *page;

	if (msk_is_shmem(file))
		return shmem_read_mapping_page_gfp(mapping, pgoff, mapping_gfp_mask(mapping));
	folio = read_mapping_folio(mapping, pgoff, file);
	if (IS_ERR(folio))
		return ERR_CAST(folio);
	page = folio_file_page(folio, pgoff);
	get_page(page);
	folio_put(folio);
	return page;
}

/* Caller holds r->lock. */
static long msk_map_file(struct msk_region *r, const struct msharefs_kmod_map_file *a)
{
	unsigned long first = a->offset >> PAGE_SHIFT;
	unsigned long last = (a->offset + a->size) >> PAGE_SHIFT;
	struct msk_file_map *fm;
	struct file *file;
	int err;

	if (!PAGE_ALIGNED(a->file_offset))
		return -EINVAL;
	if (msk_mapped_in(r, first, last))
		return -EEXIST;
	file = fget(a->fd);
	if (!file)
		return -EBADF;
	err = -ENODEV;
	if (!S_ISREG(file_inode(file)->i_mode) ||
	    file_inode(file)->i_sb->s_magic == HUGETLBFS_MAGIC ||
	    (!msk_is_shmem(file) && !file->f_mapping->a_ops->read_folio))
		goto out_fput;
	err = -EACCES;
	if (!(file->f_mode & FMODE_READ) ||
	    ((a->prot & PROT_WRITE) && !(file->f_mode & FMODE_WRITE)))
		goto out_fput;
	err = -ENOMEM;
	fm = kzalloc(sizeof(*fm), GFP_KERNEL);
	if (!fm)
		goto out_fput;
	fm->file = file;
	fm->first = first;
	fm->pgoff = a->file_offset >> PAGE_SHIFT;
	fm->prot = a->prot;
	err = mtree_store_range(&r->layout, first, last - 1, fm, GFP_KERNEL);
	if (err) {
		kfree(fm);
		goto out_fput;
	}
	list_add(&fm->node, &r->file_maps);
	WRITE_ONCE(r->mapped_pages, r->mapped_pages + last - first);
	return 0;
out_fput:
	fput(file);
	return err;
}

/*
 * Caller holds r->lock. The page that backs index, from r->pages or newly
 * taken: a zeroed data page, or the file's page-cache page.
 */
static struct page *msk_page_for(struct msk_region *r, unsigned long index, vm_fault_t *ret)
{
	void *entry = mtree_load(&r->layout, index);
	struct msk_file_map *fm = entry;
	struct page *page = xa_load(&r->pages, index);

	if (page)
		return page;
	if (xa_is_value(entry)) {
		page = alloc_page(GFP_HIGHUSER | __GFP_ZERO | __GFP_ACCOUNT);
		if (!page) {
			*ret = VM_FAULT_OOM;
			return NULL;
		}
	} else {
		page = msk_file_page(fm->file, fm->pgoff + (index - fm->first));
		if (IS_ERR(page)) {
			*ret = VM_FAULT_SIGBUS;	/* past the end of the file */
			return NULL;
		}
	}
	if (xa_err(xa_store(&r->pages, index, page, GFP_KERNEL))) {
		put_page(page);
		*ret = VM_FAULT_OOM;
		return NULL;
	}
	if (!xa_is_value(entry) && (fm->prot & PROT_WRITE))
		xa_set_mark(&r->pages, index, MSK_FILE_DIRTY);
	r->resident_pages++;
	return page;
}

/* ---- attaching mms -------------------------------------------------------- */

/* The attacher's PUD entry for addr, allocating upper levels. NULL on OOM. */
static pud_t *msk_pud_of(struct mm_struct *mm, unsigned long addr, bool alloc)
{
	pgd_t *pgd = pgd_offset(mm, addr);
	p4d_t *p4d;

	if (pgd_none(*pgd) && (!alloc || msk_p4d_alloc(mm, pgd, addr)))
		return NULL;
	p4d = p4d_offset(pgd, addr);
	if (p4d_none(*p4d) && (!alloc || msk_pud_alloc(mm, p4d, addr)))
		return NULL;
	return pud_offset(p4d, addr);
}

static bool msk_pmd_table_empty(pmd_t *table)
{
	unsigned int i;

	for (i = 0; i < PTRS_PER_PMD; i++)
		if (!pmd_none(table[i]))
			return false;
	return true;
}

/*
 * Points the attacher's PUD entry of chunk at the shared PMD table. A private
 * PMD table the fault path put there first (it is empty: every fault in a
 * window comes to us) is parked on the window, not freed, as another thread
 * of the mm may still be reading it; it is freed when the window goes.
 * Takes mm->page_table_lock. Returns true if a TLB flush is needed.
 */
static bool msk_link_chunk(struct msk_window *w, pud_t *pud, pmd_t *shared)
{
	struct mm_struct *mm = w->mm;
	struct msk_parked_table *parked;
	pud_t entry = READ_ONCE(*pud);
	bool flush = false;

	/* Already linked: every fault after the first in a chunk. */
	if (pud_present(entry) && !pud_leaf(entry) && pud_pgtable(entry) == shared)
		return false;
	parked = kmalloc(sizeof(*parked), GFP_KERNEL);
	if (!parked)
		return false;
	parked->table = NULL;
	spin_lock(&mm->page_table_lock);
	if (pud_none(*pud)) {
		pud_populate(mm, pud, shared);
	} else if (!pud_leaf(*pud) && pud_pgtable(*pud) != shared &&
		   msk_pmd_table_empty(pud_pgtable(*pud))) {
		parked->table = pud_pgtable(*pud);
		pud_populate(mm, pud, shared);
		flush = true;
	}
	spin_unlock(&mm->page_table_lock);
	if (parked->table)
		list_add(&parked->node, &w->parked);
	else
		kfree(parked);
	return flush;
}

/* Caller holds w->owner->lock or has w to itself. */
static void msk_unlink_range(struct msk_window *w, unsigned long start, unsigned long end)
{
	struct msk_region *r = w->region;
	struct mm_struct *mm = w->mm;
	unsigned long addr;
	bool flush = false;
	pud_t *pud;

	start = max(start, w->start) & PUD_MASK;
	end = min(end, w->end);
	spin_lock(&mm->page_table_lock);
	for (addr = start; addr < end; addr += PUD_SIZE) {
		pmd_t *shared = r->pmd_tables[(addr - w->start) >> PUD_SHIFT];

		pud = msk_pud_of(mm, addr, false);
		if (pud && shared && pud_present(*pud) && !pud_leaf(*pud) &&
		    pud_pgtable(*pud) == shared) {
			pud_clear(pud);
			flush = true;
		}
	}
	spin_unlock(&mm->page_table_lock);
	if (flush)
		msk_flush(mm, start, end, true);
}

static int msk_invalidate_start(struct mmu_notifier *mn,
				const struct mmu_notifier_range *range)
{
	struct msk_mm *m = container_of(mn, struct msk_mm, mn);
	struct msk_window *w;

	spin_lock(&m->lock);
	list_for_each_entry(w, &m->windows, mm_node) {
		if (range->end <= w->start || range->start >= w->end)
			continue;
		/* The window itself goes: never relink it. */
		if (range->event == MMU_NOTIFY_UNMAP)
			w->unmapping = true;
		msk_unlink_range(w, range->start, range->end);
	}
	spin_unlock(&m->lock);
	return 0;
}

static void msk_release(struct mmu_notifier *mn, struct mm_struct *mm)
{
	struct msk_mm *m = container_of(mn, struct msk_mm, mn);
	struct msk_window *w;

	spin_lock(&m->lock);
	list_for_each_entry(w, &m->windows, mm_node) {
		w->unmapping = true;
		msk_unlink_range(w, w->start, w->end);
	}
	spin_unlock(&m->lock);
}

static struct mmu_notifier *msk_alloc_notifier(struct mm_struct *mm)
{
	struct msk_mm *m = kzalloc(sizeof(*m), GFP_KERNEL);

	if (!m)
		return ERR_PTR(-ENOMEM);
	spin_lock_init(&m->lock);
	INIT_LIST_HEAD(&m->windows);
	return &m->mn;
}

static void msk_free_notifier(struct mmu_notifier *mn)
{
	kfree(container_of(mn, struct msk_mm, mn));
}

static const struct mmu_notifier_ops msk_mn_ops = {
	.invalidate_range_start = msk_invalidate_start,
	.release = msk_release,
	.alloc_notifier = msk_alloc_notifier,
	.free_notifier = msk_free_notifier,
};

/* ---- windows -------------------------------------------------------------- */

static const struct vm_operations_struct msk_vm_ops;

/*
 * Attaches vma as a window of r: registers the mm's notifier and links every
 * chunk that has a PMD table. The caller holds the mm's mmap_lock for writing
 * (mmap, or fork's copy of the parent's window).
 */
static int msk_window_attach(struct vm_area_struct *vma, struct msk_region *r)
{
	struct mm_struct *mm = vma->vm_mm;
	struct mmu_notifier *mn;
	struct msk_window *w;
	unsigned long addr;
	pud_t *pud;

	w = kzalloc(sizeof(*w), GFP_KERNEL);
	if (!w)
		return -ENOMEM;
	mn = mmu_notifier_get_locked(&msk_mn_ops, mm);
	if (IS_ERR(mn)) {
		kfree(w);
		return PTR_ERR(mn);
	}
	w->region = r;
	w->mm = mm;
	w->owner = container_of(mn, struct msk_mm, mn);
	w->start = vma->vm_start;
	w->end = vma->vm_end;
	INIT_LIST_HEAD(&w->parked);
	kref_get(&r->ref);

	mutex_lock(&r->lock);
	list_add(&w->region_node, &r->windows);
	r->nr_windows++;
	for (addr = w->start; addr < w->end; addr += PUD_SIZE) {
		pud = msk_pud_of(mm, addr, true);
		if (pud)
			msk_link_chunk(w, pud, r->pmd_tables[(addr - w->start) >> PUD_SHIFT]);
	}
	mutex_unlock(&r->lock);

	spin_lock(&w->owner->lock);
	list_add(&w->mm_node, &w->owner->windows);
	spin_unlock(&w->owner->lock);
	vma->vm_private_data = w;
	return 0;
}

static void msk_vm_open(struct vm_area_struct *vma)
{
	struct msk_window *parent = vma->vm_private_data;

	/* fork: the child's copy of a window is a window of its own. */
	vma->vm_private_data = NULL;
	if (msk_window_attach(vma, parent->region))
		pr_warn_ratelimited("msharefs_kmod: a forked window could not attach; it will fault\n");
}

static void msk_vm_close(struct vm_area_struct *vma)
{
	struct msk_window *w = vma->vm_private_data;
	struct msk_region *r;
	struct msk_parked_table *pt, *next;

	if (!w)
		return;
	r = w->region;
	spin_lock(&w->owner->lock);
	list_del(&w->mm_node);
	spin_unlock(&w->owner->lock);
	/* Normally done by the notifier already (munmap, exit). */
	if (!w->unmapping)
		msk_unlink_range(w, w->start, w->end);

	mutex_lock(&r->lock);
	list_del(&w->region_node);
	r->nr_windows--;
	mutex_unlock(&r->lock);

	list_for_each_entry_safe(pt, next, &w->parked, node) {
		pmd_free(w->mm, pt->table);
		mm_dec_nr_pmds(w->mm);
		kfree(pt);
	}
	mmu_notifier_put(&w->owner->mn);
	kfree(w);
	vma->vm_private_data = NULL;
	msk_region_put(r);
}

static vm_fault_t msk_vm_fault(struct vm_fault *vmf)
{
	struct msk_window *w = vmf->vma->vm_private_data;
	bool write = vmf->flags & FAULT_FLAG_WRITE;
	vm_fault_t ret = VM_FAULT_NOPAGE;
	unsigned long off, index;
	struct msk_region *r;
	struct page *page;
	pmd_t *shared;
	pte_t *pte, entry;
	int prot;

	if (!w || READ_ONCE(w->unmapping))
		return VM_FAULT_SIGBUS;
	r = w->region;
	off = vmf->address - w->start;
	index = off >> PAGE_SHIFT;
	mutex_lock(&r->lock);
	prot = msk_prot_at(r, index);
	if (prot < 0 || !(prot & (PROT_READ | PROT_WRITE | PROT_EXEC)) ||
	    (write && !(prot & PROT_WRITE))) {
		ret = VM_FAULT_SIGSEGV;
		goto out;
	}
	shared = r->pmd_tables[off >> PUD_SHIFT];
	pte = msk_pte_slot(r, index);
	if (!pte) {
		ret = VM_FAULT_OOM;
		goto out;
	}
	if (pte_none(ptep_get(pte))) {
		page = msk_page_for(r, index, &ret);
		if (!page)
			goto out;
		entry = mk_pte(page, msk_pgprot(prot));
		set_pte(pte, pte_mkspecial(pte_mkdirty(pte_mkyoung(entry))));
	}
	r->faults++;
	if (msk_link_chunk(w, vmf->pud, shared))
		msk_flush(w->mm, vmf->address & PUD_MASK,
			  (vmf->address & PUD_MASK) + PUD_SIZE, true);
out:
	mutex_unlock(&r->lock);
	return ret;
}

/* A store to a read-only shared PTE: allowed only if the mapping allows it. */
static vm_fault_t msk_vm_pfn_mkwrite(struct vm_fault *vmf)
{
	struct msk_window *w = vmf->vma->vm_private_data;
	unsigned long index = (vmf->address - w->start) >> PAGE_SHIFT;
	int prot = msk_prot_at(w->region, index);

	return prot >= 0 && (prot & PROT_WRITE) ? 0 : VM_FAULT_SIGSEGV;
}

static struct page *msk_vm_find_special_page(struct vm_area_struct *vma, unsigned long addr)
{
	return NULL;	/* our pages are the region's, never the mm's */
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

static const struct vm_operations_struct msk_vm_ops = {
	.open = msk_vm_open,
	.close = msk_vm_close,
	.fault = msk_vm_fault,
	.pfn_mkwrite = msk_vm_pfn_mkwrite,
	.find_special_page = msk_vm_find_special_page,
	.may_split = msk_vm_may_split,
	.mremap = msk_vm_mremap,
	.mprotect = msk_vm_mprotect,
};

/* ---- region files --------------------------------------------------------- */

static int msk_region_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct msk_region *r = file->private_data;
	int err;

	if (!(vma->vm_flags & VM_MAYSHARE) || vma->vm_pgoff || READ_ONCE(r->sealed) ||
	    !READ_ONCE(r->size) || vma->vm_end - vma->vm_start != READ_ONCE(r->size) ||
	    !IS_ALIGNED(vma->vm_start, PUD_SIZE))
		return -EINVAL;
	msk_vm_flags_set(vma, VM_IO | VM_DONTEXPAND | VM_DONTDUMP | VM_NORESERVE);
	vma->vm_ops = &msk_vm_ops;
	err = msk_window_attach(vma, r);
	return err;
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

	if (flags & MAP_FIXED)
		return IS_ALIGNED(addr, PUD_SIZE) ? addr : -EINVAL;
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
	struct msk_region *r = file->private_data;
	void __user *uarg = (void __user *)arg;
	struct msharefs_kmod_range range;
	struct msharefs_kmod_stats stats;
	long ret;

	if (cmd == MSHAREFS_KMOD_STATS) {
		mutex_lock(&r->lock);
		stats = (struct msharefs_kmod_stats){
			.size = r->size,
			.resident_pages = r->resident_pages,
			.table_pages = r->table_pages,
			.windows = r->nr_windows,
			.faults = r->faults,
		};
		mutex_unlock(&r->lock);
		return copy_to_user(uarg, &stats, sizeof(stats)) ? -EFAULT : 0;
	}
	if (cmd != MSHAREFS_KMOD_MAP && cmd != MSHAREFS_KMOD_UNMAP &&
	    cmd != MSHAREFS_KMOD_PROTECT && cmd != MSHAREFS_KMOD_SET_SIZE &&
	    cmd != MSHAREFS_KMOD_SEAL && cmd != MSHAREFS_KMOD_MAP_FILE)
		return -ENOTTY;
	if (!(file->f_mode & FMODE_WRITE))
		return -EBADF;
	if (cmd == MSHAREFS_KMOD_SEAL) {
		WRITE_ONCE(r->sealed, true);
		return 0;
	}
	if (cmd == MSHAREFS_KMOD_MAP_FILE) {
		struct msharefs_kmod_map_file mf;
		struct msharefs_kmod_range as_range;

		if (copy_from_user(&mf, uarg, sizeof(mf)))
			return -EFAULT;
		as_range = (struct msharefs_kmod_range){ mf.offset, mf.size, mf.prot, 0 };
		mutex_lock(&r->lock);
		ret = msk_check_range(r, &as_range);
		if (!ret)
			ret = msk_map_file(r, &mf);
		mutex_unlock(&r->lock);
		return ret;
	}
	if (cmd == MSHAREFS_KMOD_SET_SIZE) {
		u64 size;

		if (copy_from_user(&size, uarg, sizeof(size)))
			return -EFAULT;
		mutex_lock(&r->lock);
		ret = msk_region_set_size(r, size);
		if (!ret)
			file_inode(file)->i_size = size;
		mutex_unlock(&r->lock);
		return ret;
	}
	if (copy_from_user(&range, uarg, sizeof(range)))
		return -EFAULT;
	mutex_lock(&r->lock);
	ret = msk_check_range(r, &range);
	if (!ret && cmd == MSHAREFS_KMOD_MAP)
		ret = msk_map(r, &range);
	else if (!ret && cmd == MSHAREFS_KMOD_UNMAP)
		ret = msk_unmap(r, &range);
	else if (!ret)
		ret = msk_protect(r, &range);
	mutex_unlock(&r->lock);
	return ret;
}

/*
 * msync() of a window: the stores into file pages go back to their files.
 * Writable file pages are dirtied again each time (the window's PTEs are not
 * write-protected by writeback, so a later store would not dirty them).
 */
static int msk_region_fsync(struct file *file, loff_t start, loff_t end, int datasync)
{
	struct msk_region *r = file->private_data;
	struct msk_file_map *fm;
	unsigned long index;
	struct page *page;
	int err = 0, ret;

	mutex_lock(&r->lock);
	xa_for_each_marked(&r->pages, index, page, MSK_FILE_DIRTY)
		set_page_dirty_lock(page);
	list_for_each_entry(fm, &r->file_maps, node) {
		ret = vfs_fsync(fm->file, datasync);
		if (ret && !err)
			err = ret;
	}
	mutex_unlock(&r->lock);
	return err;
}

/* A reopen of a region file's path, e.g. FUSE passthrough's backing file. */
static int msk_region_open(struct inode *inode, struct file *file)
{
	struct msk_region *r = inode->i_private;

	kref_get(&r->ref);
	file->private_data = r;
	return 0;
}

static int msk_region_release(struct inode *inode, struct file *file)
{
	msk_region_put(file->private_data);
	return 0;
}

static const struct file_operations msk_region_fops = {
	.owner = THIS_MODULE,
	.open = msk_region_open,
	.mmap = msk_region_mmap,
	.fsync = msk_region_fsync,
	.get_unmapped_area = msk_region_get_unmapped_area,
	.unlocked_ioctl = msk_region_ioctl,
	.release = msk_region_release,
};

/* ---- /dev/msharefs_kmod --------------------------------------------------- */

/*
 * Region files live on a private pseudo filesystem: regular files whose
 * path can be opened again (FUSE passthrough reopens its backing file) and
 * lands in msk_region_open().
 */
#define MSHAREFS_KMOD_MAGIC	0x6d73686b	/* "mshk" */

static struct vfsmount *msk_mnt;

static int msk_init_fs_context(struct fs_context *fc)
{
	return init_pseudo(fc, MSHAREFS_KMOD_MAGIC) ? 0 : -ENOMEM;
}

static struct file_system_type msk_fs_type = {
	.name = "msharefs_kmod",
	.init_fs_context = msk_init_fs_context,
	.kill_sb = kill_anon_super,
};

static int msk_region_install(struct msk_region *r)
{
	struct inode *inode;
	struct file *file;
	int fd;

	inode = alloc_anon_inode(msk_mnt->mnt_sb);
	if (IS_ERR(inode))
		return PTR_ERR(inode);
	inode->i_mode = S_IFREG | 0600;
	inode->i_fop = &msk_region_fops;
	inode->i_private = r;
	inode->i_size = r->size;
	WRITE_ONCE(r->ino, inode->i_ino);
	/* The file's f_op reference, dropped by __fput(). */
	__module_get(THIS_MODULE);
	file = alloc_file_pseudo(inode, msk_mnt, "msharefs_region", O_RDWR, &msk_region_fops);
	if (IS_ERR(file)) {
		module_put(THIS_MODULE);
		iput(inode);
		return PTR_ERR(file);
	}
	file->private_data = r;
	fd = get_unused_fd_flags(O_CLOEXEC);
	if (fd < 0) {
		fput(file);	/* drops the region through release */
		return fd;
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
	if (!r)
		return -ENOMEM;
	err = c.size ? msk_region_set_size(r, c.size) : 0;
	if (!err)
		err = msk_region_install(r);
	if (err < 0)
		msk_region_put(r);
	return err;
}

static long msk_dev_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
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
	int err = msk_resolve_symbols();

	if (err) {
		pr_err("msharefs_kmod: kernel symbols not found\n");
		return err;
	}
	msk_mnt = kern_mount(&msk_fs_type);
	if (IS_ERR(msk_mnt))
		return PTR_ERR(msk_mnt);
	err = misc_register(&msk_dev);
	if (err) {
		kern_unmount(msk_mnt);
		return err;
	}
	if (!proc_create_single("msharefs_kmod", 0444, NULL, msk_proc_show)) {
		misc_deregister(&msk_dev);
		kern_unmount(msk_mnt);
		return -ENOMEM;
	}
	/* /sys/fs/mshare, where msharefsd mounts; it may exist already. */
	msk_made_mount_point = !sysfs_create_mount_point(fs_kobj, "mshare");
	return 0;
}

static void __exit msk_exit(void)
{
	if (msk_made_mount_point)
		sysfs_remove_mount_point(fs_kobj, "mshare");
	remove_proc_entry("msharefs_kmod", NULL);
	misc_deregister(&msk_dev);
	kern_unmount(msk_mnt);
	/* mmu_notifier_put() frees notifiers after an SRCU grace period. */
	mmu_notifier_synchronize();
}

module_init(msk_init);
module_exit(msk_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("msharefs: shared page tables for mshare regions");
