//! invited: answers Matrix federation invites.
