/**
 * Loopback hosts, where plain http:// is accepted (local mirrors, tests): a URL's `hostname`
 * (IPv6 in brackets, as URL gives it). Anything else, an IPv4-mapped address included, is not.
 */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '[::1]' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
