/*
 * The sandbox process of every pod on the local node (containerd's sandbox_image).
 *
 * It exists only to hold the pod's namespaces open while the app containers come and go. As PID 1 of the
 * pod's PID namespace (when namespaces are shared) it must reap orphaned children, and it must stop
 * promptly and cleanly when the kubelet tears the sandbox down with SIGTERM (or SIGINT by hand).
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signo)
{
    (void)signo;
    _exit(0); /* async-signal-safe; nothing to flush or release */
}

static void reap(int signo)
{
    int saved_errno = errno;

    (void)signo;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved_errno;
}

static int install(int signo, void (*handler)(int), int flags)
{
    struct sigaction action;

    memset(&action, 0, sizeof(action));
    sigemptyset(&action.sa_mask);
    action.sa_handler = handler;
    action.sa_flags = flags;
    return sigaction(signo, &action, NULL);
}

int main(int argc, char **argv)
{
    static const char version[] = "kserve-py pause 1\n";
    static const char failed[] = "pause: cannot install signal handlers\n";

    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        return write(STDOUT_FILENO, version, sizeof(version) - 1) < 0;
    }
    if (install(SIGINT, stop, 0) != 0 || install(SIGTERM, stop, 0) != 0
        || install(SIGCHLD, reap, SA_NOCLDSTOP | SA_RESTART) != 0) {
        (void)!write(STDERR_FILENO, failed, sizeof(failed) - 1);
        return 1;
    }
    for (;;) {
        pause();
    }
}
