// Package delegation decides who gets which token at a provider, besides
// the person themself: the grants that let a ServiceAccount use a
// person's account (bound to the ServiceAccount's uid), the token-exchange
// decisions (Service.Decide), and the record of what workloads were handed
// under grants (GrantUse, on the disclosure Ledger). It speaks no HTTP:
// refusals are *fault.Error values the HTTP layer renders.
package delegation
