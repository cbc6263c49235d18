/* Protection keys at work (tests/pku_machine.rs): allocate a key, tag a
 * page with it, deny access and read the page (the fault must say
 * SEGV_PKUERR and name the key), then allow access again by writing PKRU
 * with WRPKRU and write the page. Prints one line per step; exits 0 only
 * when every step behaved as protection keys promise. */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static sigjmp_buf back;
static volatile int fault_code = -1;
static volatile int fault_pkey = -1;
static void *volatile fault_addr;

static void on_segv(int sig, siginfo_t *info, void *ctx) {
	(void)sig;
	(void)ctx;
	fault_code = info->si_code;
	fault_pkey = info->si_pkey;
	fault_addr = info->si_addr;
	siglongjmp(back, 1);
}

static unsigned rdpkru(void) {
	unsigned eax, edx;
	__asm__ volatile(".byte 0x0f,0x01,0xee" : "=a"(eax), "=d"(edx) : "c"(0));
	return eax;
}

static void wrpkru(unsigned pkru) {
	__asm__ volatile(".byte 0x0f,0x01,0xef" : : "a"(pkru), "c"(0), "d"(0) : "memory");
}

int main(void) {
	long size = sysconf(_SC_PAGESIZE);
	volatile char *page = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED) {
		printf("mmap: %s\n", strerror(errno));
		return 1;
	}
	page[0] = 42;
	int key = pkey_alloc(0, 0);
	if (key < 0) {
		printf("pkey_alloc: %s\n", strerror(errno));
		return 1;
	}
	printf("pkey_alloc: key %d\n", key);
	if (pkey_mprotect((void *)page, size, PROT_READ | PROT_WRITE, key) != 0) {
		printf("pkey_mprotect: %s\n", strerror(errno));
		return 1;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_segv;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGSEGV, &sa, NULL);

	int ok = 1;
	if (pkey_set(key, PKEY_DISABLE_ACCESS) != 0) {
		printf("pkey_set: %s\n", strerror(errno));
		return 1;
	}
	if (sigsetjmp(back, 1) == 0) {
		char v = page[0];
		printf("read denied: no fault (read %d)\n", v);
		ok = 0;
	} else {
		int good = fault_code == SEGV_PKUERR && fault_pkey == key && fault_addr == (void *)page;
		printf("read denied: fault si_code=%d si_pkey=%d%s\n", fault_code, fault_pkey,
		       good ? " (SEGV_PKUERR)" : " (expected SEGV_PKUERR on the page)");
		ok &= good;
	}

	/* Allow the key again: its two PKRU bits (access, write) cleared. */
	unsigned pkru = rdpkru() & ~(3u << (2 * key));
	wrpkru(pkru);
	fault_code = -1;
	if (sigsetjmp(back, 1) == 0) {
		page[0] = 7;
		int good = page[0] == 7;
		printf("write allowed: pkru=%#x value=%d%s\n", rdpkru(), page[0], good ? " (ok)" : "");
		ok &= good;
	} else {
		printf("write allowed: fault si_code=%d\n", fault_code);
		ok = 0;
	}
	return ok ? 0 : 1;
}
