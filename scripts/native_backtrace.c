// A fatal-signal handler to preload into a process that dies in native code:
//
//   cc -shared -fPIC -O1 -o native_backtrace.so scripts/native_backtrace.c -ldl
//   LD_PRELOAD=$PWD/native_backtrace.so python script.py
//
// On SIGSEGV, SIGBUS, SIGILL or SIGFPE it writes the faulting instruction
// and the native call stack to stderr, one frame a line as
// "#i <object>+0x<offset> (<nearest exported symbol>)", then dies by the
// same signal. The offsets are what `addr2line -f -C -e <object>` takes
// (scripts/error_paths_smoke.py resolves them). Why not Python's faulthandler:
// it prints only Python frames, and the first H200 run's SIGSEGV (NOTES,
// change 64) happened inside one Python call into the extension. Why not a
// debugger: the GPU machines have no gdb, and cuda-gdb may not attach there.
//
// backtrace() is not on POSIX's list of async-signal-safe functions; it is
// called once before any fault (so that glibc loads its unwinder then, not
// inside the handler), and the process dies right after in any case.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

enum { kMaxFrames = 64 };

static void write_text(const char* text, int length) {
  while (length > 0) {
    const ssize_t written = write(STDERR_FILENO, text, (size_t)length);
    if (written <= 0) return;
    text += written;
    length -= (int)written;
  }
}

static void write_frame(const char* label, void* address) {
  char line[768];
  Dl_info info;
  int length;
  if (dladdr(address, &info) != 0 && info.dli_fname != NULL) {
    length = snprintf(line, sizeof line, "  %s %s+0x%lx (%s)\n", label, info.dli_fname,
                      (unsigned long)((char*)address - (char*)info.dli_fbase),
                      info.dli_sname != NULL ? info.dli_sname : "?");
  } else {
    length = snprintf(line, sizeof line, "  %s %p\n", label, address);
  }
  if (length > (int)sizeof line - 1) length = (int)sizeof line - 1;
  if (length > 0) write_text(line, length);
}

static void on_fatal_signal(int sig, siginfo_t* info, void* context) {
  char line[160];
  int length = snprintf(line, sizeof line, "native backtrace: signal %d (%s), address %p\n",
                        sig, strsignal(sig), info->si_addr);
  write_text(line, length);
#if defined(__x86_64__)
  // The faulting instruction itself: the unwinder's first frames are this
  // handler and the kernel's signal trampoline.
  const ucontext_t* uc = (const ucontext_t*)context;
  write_frame("at", (void*)uc->uc_mcontext.gregs[REG_RIP]);
#else
  (void)context;
#endif
  void* frames[kMaxFrames];
  const int count = backtrace(frames, kMaxFrames);
  for (int i = 0; i < count; ++i) {
    char label[16];
    snprintf(label, sizeof label, "#%d", i);
    write_frame(label, frames[i]);
  }
  // SA_RESETHAND restored the default action: dying by the same signal
  // keeps the exit status the parent reads.
  raise(sig);
}

__attribute__((constructor)) static void install_native_backtrace(void) {
  void* warm[1];
  backtrace(warm, 1);
  static char alternate_stack[1 << 16];  // a stack overflow still gets a trace
  stack_t ss;
  memset(&ss, 0, sizeof ss);
  ss.ss_sp = alternate_stack;
  ss.ss_size = sizeof alternate_stack;
  sigaltstack(&ss, NULL);
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = on_fatal_signal;
  action.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  const int signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE};
  for (size_t i = 0; i < sizeof signals / sizeof signals[0]; ++i) {
    sigaction(signals[i], &action, NULL);
  }
}
