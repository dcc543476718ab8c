/* A stand-in game server for the rehearsal: listens on PORT (default 8080) and answers every
 * line a client sends with its VERSION and the line, on connections held as long as the client
 * wants. On SIGTERM it stops accepting but keeps serving the connections it has (players stay
 * until the grace period ends), as a game server should. One process per connection. */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stopping = 0;
static void on_term(int sig) { (void)sig; stopping = 1; }

static void serve(int fd, const char *version) {
  char in[512], out[600];
  size_t used = 0;
  for (;;) {
    ssize_t n = read(fd, in + used, sizeof in - 1 - used);
    if (n <= 0) return;
    used += (size_t)n;
    char *newline;
    while ((newline = memchr(in, '\n', used)) != NULL) {
      size_t len = (size_t)(newline - in);
      int w = snprintf(out, sizeof out, "%s %.*s\n", version, (int)len, in);
      if (write(fd, out, (size_t)w) != w) return;
      used -= len + 1;
      memmove(in, newline + 1, used);
    }
    if (used == sizeof in - 1) used = 0;
  }
}

int main(void) {
  const char *version = getenv("VERSION") ? getenv("VERSION") : "unknown";
  int port = getenv("PORT") ? atoi(getenv("PORT")) : 8080;
  struct sigaction term = {.sa_handler = on_term};
  sigaction(SIGTERM, &term, NULL);
  signal(SIGCHLD, SIG_IGN); /* children are reaped by the kernel */
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
  if (bind(listener, (struct sockaddr *)&address, sizeof address) != 0 || listen(listener, 128) != 0) {
    perror("listen");
    return 1;
  }
  fprintf(stderr, "echo %s on port %d\n", version, port);
  while (!stopping) {
    int fd = accept(listener, NULL, NULL);
    if (fd < 0) continue;
    if (fork() == 0) {
      close(listener);
      signal(SIGTERM, SIG_IGN); /* players stay until the grace period's SIGKILL */
      serve(fd, version);
      _exit(0);
    }
    close(fd);
  }
  close(listener);
  fprintf(stderr, "echo %s: SIGTERM, no new connections; serving the ones it has\n", version);
  /* With SIGCHLD ignored, wait() returns once every connection's process has ended. */
  while (wait(NULL) > 0 || errno == EINTR) {
  }
  return 0;
}
